"""statsmodels GLMs behind the scikit-learn estimator interface (worked adapter example).

Configs name the classes as ``pfactory.adapters.statsmodels_glm.GLMClassifier`` and
``pfactory.adapters.statsmodels_glm.GLMRegressor``; the package registers this module under the
``pfactory.estimators`` entry-point group, which puts it on the trainer's import allowlist.
"""

from pfactory.adapters.statsmodels_glm.glm import GLMClassifier, GLMRegressor

__all__ = ["GLMClassifier", "GLMRegressor"]
