"""Computed traits and predictive scores per customer: RFM and its named segments,
engagement, purchase propensity (gradient boosting on a time split, calibrated) and
churn risk (Pareto/NBD), built by ``gateway scores build`` and judged by ``scores eval``."""
