"""The four trainers cut at the device / server boundary, for a transport that runs them apart.

Each :class:`FlowerModel` wraps one trainer (built from the run settings by
:func:`build_model`, the same way on the server and on every node) and names what
lives where; the maths stays in the trainer:

* ``shared()`` / ``load_shared()``: what the server holds and broadcasts (FedMF: V,
  mu, n_j; FCF: Y; PFedRec: E; PersonalFR: the autoencoder's flat parameters, of
  which the server updates the federated part);
* ``private(clients)`` / ``load_private()``: a device's committed state (FedMF: u_i;
  PFedRec: the score function (w_i, b_i) and its post-tuned logits; PersonalFR: the
  encoder, momentum, idle-row map and round count; FCF: none, x_u is re-solved);
  ``pending(clients)``: the state a round produced, committed only if the server
  includes the client (as :meth:`RoundTrainer.server_step` commits);
* ``streams(clients)`` / ``load_streams()``: the device's random streams (PFedRec's
  negative sampling, PersonalFR's batch order and dropout masks) as JSON text;
* ``train(round, clients)``: the trainer's ``local_updates`` (uploads in model units);
  ``apply_aggregate``: the server's part of the trainer's ``server_step``;
* ``metric_sums(clients)`` / :func:`combine`: a device's sums of the trainer's test
  metrics over its own users, and the server's metrics from all sums (RMSE from squared
  errors, means of per-user ranking metrics), equal to the trainer's ``evaluate``.

Nothing here imports flwr.
"""

from __future__ import annotations

import abc
import json

import numpy as np

from ..als import ImplicitConfig, user_scores
from ..autorec import decode_hidden, targets
from ..data import load_ratings, random_holdout
from ..data.implicit import loo_split
from ..errors import ConfigError
from ..fcf import FCFConfig, FCFTrainer
from ..model import ModelConfig, predict
from ..personalfr import ClientState, FedConfig, Layout, PersonalFRTrainer
from ..personalfr import ndcg_at_k as grouped_ndcg
from ..pfedrec import PFedRecConfig, PFedRecTrainer
from ..pfedrec_model import global_logits
from ..ranking import evaluate_ranking, hit_ratio_at_k, ndcg_at_k
from ..trainer import FedMFTrainer

MODELS = ("fedmf", "fcf", "pfedrec", "personalfr")
BACKENDS = ("plain", "secagg", "secagg+", "paillier_packed")

#: run-config keys, their defaults (the trainers' defaults) and types
SETTINGS: dict[str, object] = {
    "model": "fedmf", "backend": "plain", "rounds": 2, "seed": 0,
    "dataset": "ml-100k", "split": "auto", "users": 0, "negatives": 99, "test-fraction": 0.2,
    "factors": 0, "lr": 0.0, "reg": -1.0, "upload-scale": 0.0, "fraction": 0.0,
    "alpha": 10.0, "latent-dim": 32, "lr-eta": 80.0, "batch-size": 256, "n-neg": 4,
    "variant": "", "loss": "explicit", "local-epochs": 5,
    "precision-bits": 16, "timeout": 120.0, "num-nodes": 0,
}


def settings(run_config) -> dict[str, object]:
    """The run config over :data:`SETTINGS` (other keys kept), checked and typed."""
    out = dict(SETTINGS)
    for key, value in dict(run_config).items():
        out[key] = type(SETTINGS[key])(value) if key in SETTINGS else value
    if out["model"] not in MODELS:
        raise ConfigError(f"run config 'model' must be one of {MODELS}, got {out['model']!r}")
    if out["backend"] not in BACKENDS:
        raise ConfigError(f"run config 'backend' must be one of {BACKENDS}, got {out['backend']!r}")
    if out["backend"] == "paillier_packed" and out["model"] != "fedmf":
        raise ConfigError("backend 'paillier_packed' runs FedMF only (its clients apply the update "
                          "rule to their copy of V; the other models need the server's step in clear)")
    if int(out["rounds"]) < 1:
        raise ConfigError(f"run config 'rounds' must be >= 1, got {out['rounds']}")
    return out


def load_data(cfg: dict, implicit: bool):
    """The dataset's ratings (only users below ``users`` when > 0), split for the model."""
    ratings = load_ratings(str(cfg["dataset"]), seed=int(cfg["seed"]))
    if int(cfg["users"]) > 0:
        ratings = ratings.subset(ratings.users < int(cfg["users"]))
    split = cfg["split"] if cfg["split"] != "auto" else ("loo" if implicit else "random")
    if implicit:
        if split != "loo":
            raise ConfigError(f"{cfg['model']} needs split 'loo', got {split!r}")
        return loo_split(ratings, seed=int(cfg["seed"]), n_negatives=int(cfg["negatives"]))
    if split != "random":
        raise ConfigError(f"{cfg['model']} takes split 'random' here, got {split!r}")
    return random_holdout(ratings, float(cfg["test-fraction"]), seed=int(cfg["seed"]),
                          name=f"{cfg['dataset']}:random")


def _or(value, default):
    """A setting, or the trainer's default where the setting is left at 0 / '' / -1."""
    return default if value in (0, 0.0, "", -1.0) else value


def build_trainer(cfg: dict):
    """The in-process trainer for these settings (what the engine would run), and its participation."""
    name, seed = cfg["model"], int(cfg["seed"])
    if name == "fedmf":
        d = ModelConfig()
        config = ModelConfig(factors=int(_or(cfg["factors"], d.factors)), lr=float(_or(cfg["lr"], d.lr)),
                             reg=float(_or(cfg["reg"], d.reg)))
        return FedMFTrainer(load_data(cfg, False), "plain", config=config, seed=seed,
                            upload_scale=float(_or(cfg["upload-scale"], 16.0))), 1.0
    if name == "fcf":
        d = ImplicitConfig()
        model = ImplicitConfig(factors=int(_or(cfg["factors"], d.factors)), alpha=float(cfg["alpha"]),
                               reg=float(_or(cfg["reg"], d.reg)))
        fcf = FCFConfig(lr=float(_or(cfg["lr"], FCFConfig.lr)),
                        upload_clip=float(_or(cfg["upload-scale"], FCFConfig.upload_clip)))
        return FCFTrainer(load_data(cfg, True), model, fcf, seed=seed), float(_or(cfg["fraction"], 1.0))
    if name == "pfedrec":
        config = PFedRecConfig(latent_dim=int(cfg["latent-dim"]), lr=float(_or(cfg["lr"], 0.1)),
                               lr_eta=float(cfg["lr-eta"]), batch_size=int(cfg["batch-size"]),
                               n_neg=int(cfg["n-neg"]), rounds=int(cfg["rounds"]),
                               sample_fraction=float(_or(cfg["fraction"], 1.0)),
                               variant=str(_or(cfg["variant"], "pfedrec")),
                               upload_clip=float(_or(cfg["upload-scale"], 64.0)), seed=seed)
        trainer = PFedRecTrainer(load_data(cfg, True), config)
        return trainer, config.sample_fraction
    config = FedConfig(loss=str(cfg["loss"]), variant=str(_or(cfg["variant"], "personalfr")),
                       rounds=int(cfg["rounds"]), fraction=float(_or(cfg["fraction"], 0.1)),
                       local_epochs=int(cfg["local-epochs"]), lr=float(_or(cfg["lr"], 0.1)))
    trainer = PersonalFRTrainer(load_data(cfg, False), config=config, seed=seed,
                                upload_scale=float(_or(cfg["upload-scale"], 1.0)), client_streams=True)
    return trainer, config.fraction


def build_model(cfg: dict) -> FlowerModel:
    """The :class:`FlowerModel` of ``cfg`` (settings) around a freshly built trainer."""
    trainer, participation = build_trainer(cfg)
    return WRAPPERS[cfg["model"]](trainer, participation)


class FlowerModel(abc.ABC):
    """One trainer cut at the device / server boundary (module docstring)."""

    has_setup = False

    def __init__(self, trainer, participation: float) -> None:
        self.trainer, self.participation = trainer, float(participation)

    def clients(self) -> list[int]:
        return [int(c) for c in self.trainer.clients()]

    @property
    def scale(self) -> float:
        """The upload scale: a client's upload divided by it lies in [-1, 1]."""
        return float(self.trainer.upload_layout().scale)

    def train(self, round: int, clients: list[int]) -> dict[int, np.ndarray]:
        return self.trainer.local_updates(round, clients).vectors

    def apply_aggregate(self, round: int, aggregate: np.ndarray, included: list[int]) -> None:
        self.trainer.apply_aggregate(round, aggregate, included)

    @abc.abstractmethod
    def shared(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def load_shared(self, arrays) -> None: ...

    def private(self, clients: list[int]) -> dict[str, np.ndarray]:
        return {}

    def load_private(self, clients: list[int], arrays) -> None:
        """Set the committed device state of ``clients`` (``arrays`` from :meth:`private`)."""

    def pending(self, clients: list[int]) -> dict[str, np.ndarray]:
        return {}

    def streams(self, clients: list[int]) -> dict[str, str]:
        return {}

    def load_streams(self, clients: list[int], states: dict[str, str]) -> None:
        """Set the random streams of ``clients`` (``states`` from :meth:`streams`)."""

    @abc.abstractmethod
    def metric_sums(self, clients: list[int]) -> dict[str, float]: ...


def combine(sums: dict[str, float]) -> dict[str, float]:
    """Metrics from summed device sums: ``<m>.sum`` / ``<group>.count`` keys, ``sse``-style roots."""
    out = {}
    for key, value in sums.items():
        if not key.endswith(".sum"):
            continue
        name, group = key[:-4], key[:-4].split(":")[0]
        count = sums.get(f"{group}.count", 0.0)
        mean = value / count if count else 0.0
        out[name.split(":")[-1]] = float(np.sqrt(mean)) if name.endswith("rmse") else float(mean)
    return out


def _stack(rows: list[np.ndarray], shape) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, *shape))


class FedMFModel(FlowerModel):
    """FedMF (:mod:`fedmf.trainer`): V, mu and n_j shared; u_i private."""

    has_setup = True

    def shared(self):
        t = self.trainer
        return {"V": t.V, "mu": np.array([t.mu]), "item_counts": t.item_counts.astype(np.float64)}

    def load_shared(self, arrays):
        t = self.trainer
        t.V, t.mu = np.array(arrays["V"], dtype=np.float64), float(np.asarray(arrays["mu"])[0])
        t.item_counts = np.rint(np.asarray(arrays["item_counts"])).astype(np.int64)

    def setup_vector(self, client: int) -> np.ndarray:
        return self.trainer.setup_vector(client)

    def apply_setup(self, aggregate: np.ndarray) -> None:
        self.trainer.apply_setup(aggregate)

    def private(self, clients):
        return {"U": self.trainer.U[clients]}

    def load_private(self, clients, arrays):
        if clients:
            self.trainer.U[clients] = arrays["U"]

    def pending(self, clients):
        return {"U": _stack([self.trainer._new_users[c] for c in clients], self.trainer.U.shape[1:])}

    def metric_sums(self, clients):
        t, test = self.trainer, self.trainer.split.test
        mask = np.isin(test.users, clients)
        pred = predict(t.mu, t.U, t.V, test.users[mask], test.items[mask], test.rating_scale)
        err = pred - test.ratings[mask]
        return {"test:test_rmse.sum": float(err @ err), "test:test_mae.sum": float(np.abs(err).sum()),
                "test.count": float(mask.sum())}


class FCFModel(FlowerModel):
    """FCF (:mod:`fedmf.fcf`): Y and the optimiser on the server; nothing kept on the device."""

    def shared(self):
        return {"Y": self.trainer.Y}

    def load_shared(self, arrays):
        self.trainer.Y = np.array(arrays["Y"], dtype=np.float64)

    def apply_aggregate(self, round, aggregate, included):
        self.trainer.server_step(round, aggregate, included)  # FCF's step is the server's only

    def metric_sums(self, clients):
        t = self.trainer
        scores = user_scores(t.split, t.Y, t.model)
        out = {}
        for part in ("val", "test"):
            indptr = t.split.part(part)[0]
            count = int(np.count_nonzero(np.diff(indptr)[clients])) if clients else 0
            if not count:
                continue
            means = evaluate_ranking(scores, t.split, part, users=np.asarray(clients))
            out.update({f"{part}:{part}_{k}.sum": v * count for k, v in means.items()})
            out[f"{part}.count"] = float(count)
        return out


class PFedRecModel(FlowerModel):
    """PFedRec (:mod:`fedmf.pfedrec`): E shared; (w_i, b_i) and own logits private."""

    def shared(self):
        return {"E": self.trainer.state.E}

    def load_shared(self, arrays):
        self.trainer.state.E = np.array(arrays["E"], dtype=np.float64)

    def private(self, clients):
        st = self.trainer.state
        return {"W": st.W[clients], "B": st.B[clients], "own_logits": st.own_logits[clients]}

    def load_private(self, clients, arrays):
        st = self.trainer.state
        if clients:
            st.W[clients], st.B[clients], st.own_logits[clients] = arrays["W"], arrays["B"], arrays["own_logits"]

    def pending(self, clients):
        cr = self.trainer.last_round
        return {"W": cr.W[clients], "B": cr.B[clients], "own_logits": cr.logits[clients]}

    def streams(self, clients):
        return {"negatives": json.dumps(self.trainer.rng.bit_generator.state)}

    def load_streams(self, clients, states):
        if "negatives" in states:
            self.trainer.rng.bit_generator.state = json.loads(states["negatives"])

    def metric_sums(self, clients):
        t, st = self.trainer, self.trainer.state
        users = np.asarray([c for c in clients if t.evaluated[c]], dtype=np.int64)
        shared = global_logits(st.E, st.W[users], st.B[users], t.eval_items[users])
        own = shared if t.config.variant == "fedmf" else st.own_logits[users]
        out = {"eval.count": float(users.size)}
        everyone = np.ones(users.size, bool)
        for prefix, logits in (("", own), ("global_", shared)):
            for part, ranks in zip(("val_", ""), t.ranks(logits, everyone)):
                n = len(ranks)
                out[f"eval:{prefix}{part}hr_at_10.sum"] = hit_ratio_at_k(ranks, 10) * n
                out[f"eval:{prefix}{part}ndcg_at_10.sum"] = ndcg_at_k(ranks, 10) * n
        return out


class PersonalFRModel(FlowerModel):
    """PersonalFR (:mod:`fedmf.personalfr`): the decoder shared; each client's encoder,
    momentum and random stream private (its own stream: ``client_streams=True``)."""

    def shared(self):
        return {"theta": self.trainer.global_flat}

    def load_shared(self, arrays):
        self.trainer.global_flat = np.array(arrays["theta"], dtype=np.float32)

    def _state_arrays(self, states, clients):
        out = {}
        for c in clients:
            s = states.get(c)
            if s is None:
                continue
            out[f"{c}.momentum"], out[f"{c}.encoder"] = s.momentum, s.encoder if s.encoder is not None else np.zeros(0, np.float32)
            out[f"{c}.scalars"] = np.array([s.idle_beta, s.rounds], dtype=np.float64)
        return out

    def private(self, clients):
        return self._state_arrays(self.trainer.states, clients)

    def pending(self, clients):
        return self._state_arrays(self.trainer._pending, clients)

    def load_private(self, clients, arrays):
        for c in clients:
            if f"{c}.momentum" not in arrays:
                self.trainer.states.pop(c, None)
                continue
            encoder = np.asarray(arrays[f"{c}.encoder"], dtype=np.float32)
            idle, rounds = np.asarray(arrays[f"{c}.scalars"])
            self.trainer.states[c] = ClientState(np.array(arrays[f"{c}.momentum"], dtype=np.float32),
                                                 float(idle), encoder if encoder.size else None, int(rounds))

    def streams(self, clients):
        t = self.trainer
        return {str(c): json.dumps(t.client_rngs[c].bit_generator.state) for c in clients if c in t.client_rngs}

    def load_streams(self, clients, states):
        t = self.trainer
        for c in clients:
            t.client_rngs.pop(c, None)
            if str(c) in states:
                t.client_rng(c).bit_generator.state = json.loads(states[str(c)])

    def metric_sums(self, clients):
        t = self.trainer
        users = np.concatenate([t.data[c].users for c in clients]) if clients else np.zeros(0, np.int64)
        codes = t.codes(clients)
        p = Layout(t.n_items).views(t.global_flat)
        test = t.split.test
        mask = np.isin(test.users, users)
        tu, ti = test.users[mask], test.items[mask]
        h3 = decode_hidden(p, codes[tu])
        y = np.einsum("ij,ij->i", h3, p["W4"][ti]) + p["b4"][ti]
        target = targets(test.ratings[mask], t.cfg.loss)
        if t.cfg.loss == "explicit":
            return {"test:test_rmse.sum": float(((y - target) ** 2).sum()), "test.count": float(mask.sum())}
        n_users = float(np.unique(tu).size)
        return {"test:ndcg_at_10.sum": grouped_ndcg(tu, y, target, 10) * n_users, "test.count": n_users}


WRAPPERS = {"fedmf": FedMFModel, "fcf": FCFModel, "pfedrec": PFedRecModel, "personalfr": PersonalFRModel}
