"""Next-best-action decisioning: the action catalog, the decision funnel and the policies that choose."""
