"""statsmodels GLMs as scikit-learn estimators: fit with statsmodels, keep only numpy state.

statsmodels' result objects hold the design matrix, the model and closures; storing them would make
the artifact large and full of types a safe loader must refuse. So ``fit`` copies the coefficients
(and, for unpenalised fits, their standard errors and p-values) into numpy arrays and drops the
result: a fitted estimator holds arrays, floats and strings, which skops loads with trusted types,
and predicting needs numpy and scipy only (statsmodels is imported inside ``fit``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit  # type: ignore[import-untyped]
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.utils import Tags  # type: ignore[import-untyped]
from sklearn.utils.multiclass import check_classification_targets  # type: ignore[import-untyped]
from sklearn.utils.validation import check_is_fitted, validate_data  # type: ignore[import-untyped]

FloatArray = NDArray[np.float64]


class _GLM(BaseEstimator):  # type: ignore[misc]
    """Shared parameters and the statsmodels fit of both GLM estimators."""

    _family = "gaussian"

    def __init__(self, *, alpha: float = 0.0, fit_intercept: bool = True, max_iter: int = 100) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter

    def _fit_glm(self, X: FloatArray, target: FloatArray) -> None:
        import statsmodels.api as sm  # type: ignore[import-untyped]  # only fitting needs statsmodels
        from statsmodels.tools import sm_exceptions  # type: ignore[import-untyped]

        if X.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to fit; got 1 sample")
        if self.alpha < 0 or self.max_iter < 1:
            raise ValueError(f"alpha must be >= 0 and max_iter >= 1; got {self.alpha!r}, {self.max_iter!r}")
        exog = np.column_stack([np.ones(len(X)), X]) if self.fit_intercept else X
        family = sm.families.Binomial() if self._family == "binomial" else sm.families.Gaussian()
        model = sm.GLM(target, exog, family=family)
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            if self.alpha > 0:
                params, self.n_iter_ = self._fit_ridge(model, exog.shape[1])
                # statsmodels gives no standard errors for penalised fits
                bse = pvalues = np.full(exog.shape[1], np.nan)
            else:
                result = model.fit(maxiter=self.max_iter)
                params = np.asarray(result.params, dtype=np.float64)
                self.n_iter_ = int(result.fit_history["iteration"])
                bse, pvalues = np.asarray(result.bse, float), np.asarray(result.pvalues, float)
        # statsmodels' convergence and separation warnings become scikit-learn's ConvergenceWarning,
        # the category scikit-learn users filter and tools like GridSearchCV understand.
        for w in caught:
            if issubclass(
                w.category, (sm_exceptions.ConvergenceWarning, sm_exceptions.PerfectSeparationWarning)
            ):
                warnings.warn(f"{type(self).__name__}: {w.message}", ConvergenceWarning, stacklevel=3)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        start = int(self.fit_intercept)
        self.intercept_ = float(params[0]) if self.fit_intercept else 0.0
        self.coef_ = params[start:].copy()
        self.bse_, self.pvalues_ = bse[start:].copy(), pvalues[start:].copy()

    def _fit_ridge(self, model: Any, n_params: int) -> tuple[FloatArray, int]:
        """Maximise statsmodels' mean log-likelihood minus ``alpha/2 * |coef|^2``.

        This is ``GLM.fit_regularized(L1_wt=0)``'s objective, solved here with L-BFGS-B so that
        ``max_iter`` applies and the iteration count is known; ``scale=1`` keeps the gaussian
        likelihood and its gradient consistent (statsmodels' own ridge path pairs the likelihood
        at a re-estimated scale with a gradient at another, and then fails to converge).
        """
        from scipy.optimize import minimize  # type: ignore[import-untyped]

        penalty = np.full(n_params, float(self.alpha))
        penalty[: int(self.fit_intercept)] = 0.0  # the intercept is not shrunk
        n = float(model.nobs)

        def loss(x: FloatArray) -> float:
            return float(-(model.loglike(x, scale=1.0) / n - np.sum(penalty * x**2) / 2))

        def grad(x: FloatArray) -> FloatArray:
            out: FloatArray = -(model.score(x, scale=1.0) / n - penalty * x)
            return out

        found = minimize(
            loss, np.zeros(n_params), jac=grad, method="L-BFGS-B", options={"maxiter": self.max_iter}
        )
        if not found.success:
            warnings.warn(
                f"{type(self).__name__}: the L2-penalised fit did not converge in {found.nit} iterations "
                f"({found.message}); raise max_iter or scale the features",
                ConvergenceWarning,
                stacklevel=4,
            )
        return np.asarray(found.x, dtype=np.float64), max(int(found.nit), 1)

    def _linear(self, X: ArrayLike) -> FloatArray:
        check_is_fitted(self, "coef_")
        data = validate_data(self, X, reset=False, dtype=np.float64)
        out: FloatArray = data @ self.coef_ + self.intercept_
        return out


class GLMClassifier(ClassifierMixin, _GLM):  # type: ignore[misc]
    """Logistic regression (binomial GLM, logit link) fitted by statsmodels.

    Args:
        alpha: L2 penalty on the coefficients (not the intercept), in statsmodels' scale (the mean
            log-likelihood is penalised); 0 fits by maximum likelihood and reports ``bse_``/``pvalues_``.
        fit_intercept: whether to fit an intercept.
        max_iter: iteration limit of the solver (IRLS; L-BFGS-B when ``alpha > 0``).

    Attributes:
        classes_: the two class labels; the second is the positive class.
        coef_: coefficients, one per input feature.
        intercept_: the intercept (0.0 without one).
        n_iter_: iterations the solver ran (IRLS, or L-BFGS-B when ``alpha > 0``).
        bse_: standard errors of ``coef_`` (NaN when ``alpha > 0``).
        pvalues_: two-sided p-values of ``coef_`` (NaN when ``alpha > 0``).
        n_features_in_: number of input features.
        feature_names_in_: input column names, when fitted on a DataFrame with string column names.
    """

    _family = "binomial"

    def fit(self, X: ArrayLike, y: ArrayLike) -> GLMClassifier:
        """Fit on features ``X`` and binary labels ``y``; returns self."""
        X_, y_ = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y_)
        self.classes_, encoded = np.unique(y_, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(
                f"Only binary classification is supported: GLMClassifier is a binomial model and needs "
                f"exactly 2 classes in y; got "
                f"{len(self.classes_)} class(es): {self.classes_.tolist()[:10]}"
            )
        self._fit_glm(X_, encoded.astype(np.float64))
        return self

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Log-odds of the positive class (``classes_[1]``)."""
        return self._linear(X)

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Probabilities of ``classes_[0]`` and ``classes_[1]``, one row per sample."""
        positive = expit(self._linear(X))
        out: FloatArray = np.column_stack([1.0 - positive, positive])
        return out

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The more probable class label of each sample."""
        positive = self._linear(X) > 0  # first, so an unfitted estimator raises NotFittedError
        labels: NDArray[Any] = self.classes_[positive.astype(int)]
        return labels

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        assert tags.classifier_tags is not None  # set by ClassifierMixin
        tags.classifier_tags.multi_class = False
        return tags


class GLMRegressor(RegressorMixin, _GLM):  # type: ignore[misc]
    """Linear regression (gaussian GLM, identity link) fitted by statsmodels.

    Args:
        alpha: L2 penalty on the coefficients (not the intercept), in statsmodels' scale; 0 fits by
            least squares and reports ``bse_``/``pvalues_``.
        fit_intercept: whether to fit an intercept.
        max_iter: iteration limit of the solver (IRLS; L-BFGS-B when ``alpha > 0``).

    Attributes:
        coef_, intercept_, n_iter_, bse_, pvalues_, n_features_in_, feature_names_in_: as for
            `GLMClassifier`.
    """

    def fit(self, X: ArrayLike, y: ArrayLike) -> GLMRegressor:
        """Fit on features ``X`` and a numeric target ``y``; returns self."""
        X_, y_ = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        self._fit_glm(X_, np.asarray(y_, dtype=np.float64))
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Predicted target of each sample."""
        return self._linear(X)
