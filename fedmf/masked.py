"""FedMF on personally masked targets, the device side (our reading of FedMMF, Yang et al. 2022 [R]).

Each user fits a local model on its own training ratings only
(:mod:`secagg.personal_mask`); the mask of rating (i, j) is that model's prediction
m_ij. FedMF then runs unchanged on the masked targets r~_ij = r_ij - m_ij (the public
statistics mu and n_j of its setup aggregation are computed from them), and the device
predicts  r^_ij = m_ij + mu + <u'_i, v'_j>, clipped to the dataset's rating scale. The
mask never leaves the device. This is our reconstruction from the paper's abstract, not
the paper's text: FedMMF's method section and code are not public.

Private parts of a mask. A mask that is a function of a few private numbers (the user's
mean, ridge weights on public genres, a private residual scale s with r~ = s (r - f))
can be undone on integer ratings by fitting those numbers so that the recovered r~ lands
on the integer grid (:mod:`attacks.demask`). What a server cannot fit is an item-varying
private part: ``noise_sigma`` > 0 adds a private Gaussian draw (``os.urandom``, fixed for
the run) to the mask of every training rating (:class:`secagg.personal_mask.PrivateNoise`);
``scale`` = (low, high) shrinks a user's residuals by a private s drawn from that range
(:class:`secagg.personal_mask.PrivateScale`), so the targets are s (r - f) - eta: the
noise is small in the units the model trains on but large, sigma / s, in rating units.
:func:`refit_private` is the device-side refit of the user's own parameters on the
*denoised* targets r - f with the final item matrix (local post-processing, nothing is
uploaded).

The adaptive protocol around these masks (which uploads leave in clear, the self-audit
that decides it, and the measured leakage) lives in :mod:`attacks.masked_experiment`;
this module imports nothing from :mod:`attacks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from secagg.personal_mask import (
    BiasModel,
    LocalMFModel,
    LocalModel,
    PersonalMask,
    PrivateNoise,
    PrivateScale,
    RidgeModel,
    fit_personal_mask,
)

from .data import Split
from .data.features import item_genres
from .errors import ConfigError
from .metrics import rmse
from .model import predict
from .trainer import FedMFTrainer

MASK_MODELS = ("ridge", "bias", "mf")
#: adaptive-protocol policies: none (no adaptive backend), count, audit, all, never
POLICIES = ("none", "count", "audit", "all", "never")
#: the self-audit's leakage metrics: exact-rating fraction and RMSE in rating units
AUDIT_METRICS = ("exact", "rmse")


def local_model(kind: str, dataset: str, split: Split, *, alpha: float = 30.0) -> LocalModel:
    """The local model every user fits for its mask.

    ``ridge``: user mean + ridge regression (``alpha``) on the public genre flags;
    ``bias``: the user's mean rating; ``mf``: a small local MF with private item factors
    (one user's data: it mostly memorises, so the residual carries little signal).
    """
    if kind == "ridge":
        return RidgeModel(item_genres(dataset, split), alpha=alpha)
    if kind == "bias":
        return BiasModel()
    if kind == "mf":
        return _PerUserMF(LocalMFModel())
    raise ConfigError(f"unknown mask model {kind!r}; choose one of {MASK_MODELS}")


@dataclass(frozen=True)
class _PerUserMF:
    """A :class:`LocalMFModel` keyed by item only (the participant is one user: row 0)."""

    model: LocalMFModel

    def fit(self, x, y):
        predict = self.model.fit(np.column_stack([np.zeros_like(x), x]), y)
        return lambda items: predict(np.column_stack([np.zeros_like(items), items]))


@dataclass(frozen=True)
class MaskDesign:
    """What the server knows about the masks: the public basis the local models are
    linear in (``features``: the public item features of a ridge mask, None for masks
    with no public item structure) and the private noise level ``noise_sigma``."""

    features: np.ndarray | None = None
    noise_sigma: float = 0.0
    #: (low, high) of the private per-user residual scale s (PrivateScale); None: unscaled
    scale_range: tuple[float, float] | None = None

    def basis(self, items: np.ndarray) -> np.ndarray:
        """The (n, 1 + d) public basis for one user's rated ``items`` (intercept first)."""
        ones = np.ones((items.size, 1))
        return ones if self.features is None else np.hstack([ones, self.features[items]])


@dataclass
class MaskedSplit:
    """A split whose training ratings are the masked targets r - m, and the masks.

    ``test_offset[k]`` is the mask of test rating k (added to the federated prediction).
    ``clean_train_mask`` is the mask without its private noise (the device's denoised
    targets are r - clean_train_mask). Users without training ratings have no local
    model; their offset is the public midpoint of the rating scale.
    """

    split: Split
    masks: dict[int, PersonalMask]
    train_mask: np.ndarray
    test_offset: np.ndarray
    design: MaskDesign = field(default_factory=MaskDesign)
    clean_train_mask: np.ndarray | None = None

    @property
    def noisy_users(self) -> list[int]:
        """Users whose training mask differs from the clean one (private noise or scale)."""
        if self.clean_train_mask is None:
            return []
        rows = self.split.train.rows_by_user()
        return [u for u in self.masks if not np.array_equal(self.train_mask[rows[u]], self.clean_train_mask[rows[u]])]

    @property
    def fitted_counts(self) -> dict[int, int]:
        return {u: m.n_fitted for u, m in self.masks.items()}


def mask_split(split: Split, model: LocalModel, *, noise_sigma: float = 0.0,
               scale: tuple[float, float] | None = None, design: MaskDesign | None = None) -> MaskedSplit:
    """Fit every user's mask on its own training ratings and mask the training targets
    (with ``scale`` = (low, high), residuals shrunk by a private scale:
    :class:`PrivateScale`; with ``noise_sigma`` > 0, plus private noise: :class:`PrivateNoise`)."""
    train, test = split.train, split.test
    if scale is not None:
        model = PrivateScale(model, *scale)
    if noise_sigma > 0:
        model = PrivateNoise(model, noise_sigma)
    train_rows, test_rows = train.rows_by_user(), test.rows_by_user()
    train_mask, clean = np.zeros(len(train)), np.zeros(len(train))
    test_offset = np.full(len(test), float(sum(train.rating_scale)) / 2)
    masks = {}
    for u in range(train.n_users):
        rows = train_rows[u]
        if rows.size == 0:
            continue
        mask = fit_personal_mask(model, train.items[rows], train.ratings[rows])
        masks[u] = mask
        train_mask[rows] = mask.values(train.items[rows])
        clean[rows] = mask.base_values(train.items[rows])
        test_offset[test_rows[u]] = mask.values(test.items[test_rows[u]])
    masked_train = replace(train, ratings=train.ratings - train_mask, name=f"{train.name} masked")
    design = replace(design or MaskDesign(), noise_sigma=float(noise_sigma),
                     scale_range=None if scale is None else (float(scale[0]), float(scale[1])))
    return MaskedSplit(Split(masked_train, test, split.validation, f"{split.name} masked"),
                       masks, train_mask, test_offset, design, clean)


def mask_design(kind: str, dataset: str, split: Split) -> MaskDesign:
    """The public basis of a mask model (ridge: its public item features)."""
    return MaskDesign(item_genres(dataset, split)) if kind == "ridge" else MaskDesign()


def refit_private(trainer: FedMFTrainer, targets: np.ndarray) -> np.ndarray:
    """Device-side refit of every user's private coordinates (u_i, b_i) on ``targets``
    with the final item matrix: the minimiser of the local objective
    (1/n_i) sum_j (t_ij - mu - c_j - <u_i, v_j> - b_i)^2 + lambda |(u_i, b_i)|^2
    (a ridge solve). Returns the refitted user matrix; nothing is uploaded."""
    cfg, train, V = trainer.config, trainer.split.train, trainer.V
    U, free = trainer.U.copy(), cfg.user_mask
    for u in trainer.participants():
        rows = trainer.user_rows[u]
        Vr = V[train.items[rows]]
        X, y = Vr[:, free], targets[rows] - trainer.mu - Vr[:, ~free] @ U[u, ~free]
        n = rows.size
        U[u, free] = np.linalg.solve(X.T @ X / n + cfg.reg * np.eye(X.shape[1]), X.T @ y / n)
    return U


def test_rmse(trainer: FedMFTrainer, U: np.ndarray, offset: np.ndarray | float = 0.0) -> float:
    """Test RMSE of the model (mu + offset + <u'_i, v'_j>, clipped) with user matrix U."""
    test = trainer.split.test
    return rmse(predict(trainer.mu + offset, U, trainer.V, test.users, test.items, test.rating_scale), test.ratings)
