"""journeylake models: segmentation, propensity, churn, explanations."""
