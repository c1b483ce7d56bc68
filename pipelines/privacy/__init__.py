"""Privacy: erasing a person everywhere (GDPR Article 17) and proving it by the bytes left."""
