"""statsmodels GLMs behind the scikit-learn estimator interface (worked adapter example)."""
