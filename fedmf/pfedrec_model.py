"""PFedRec's numerical core (Zhang et al., IJCAI 2023, Alg. 1): numba kernels over all users.

Model (paper eq. 3-5, code ``mlp.py``): user i scores item j with the one-layer score
function  r_ij = sigmoid(w_i . e_j + b_i)  on its own copy of the item embedding table
E (M x K). Loss: batch-mean binary cross-entropy on the user's positives and 4 sampled
negatives per positive (paper eq. 6-8, code ``BCELoss``).

One round of local training for user i (paper Alg. 1 ClientUpdate, code
``fed_train_single_batch``), on a copy of the global table:
  for each batch of B samples (shuffled):
    1. g_k = (p_k - y_k) / B;  w <- w - lr * sum_k g_k e_k;  b <- b - lr * sum_k g_k
       (score function step, embeddings fixed);
    2. recompute g_k with the new (w, b);  e_j <- e_j - lr_item * sum_{k: j_k = j} g_k w
       (item step on the user's copy, score function fixed), with
       lr_item = lr * num_items * lr_eta as in the official code's ``optimizer_i``.
``joint=True`` takes both gradients at the same point and applies them together: the
FedMF-on-implicit-data baseline (no alternation).

Only the rows a user touches (its positives and this round's negatives) can change,
so the kernels work on those rows and return the per-user deltas in CSR form;
:func:`dense_uploads` expands them into the round's dense uploads, one row per user.
Scores are returned as logits w . e + b: sigmoid is monotone, so ranking by logits
equals ranking by r_ij without the ties float saturation of sigmoid would add.

Randomness (negatives, shuffling) comes in as uniform floats drawn by the caller from a
seeded numpy Generator, so results are deterministic with any number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    ez = np.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def _bce(z: float, y: float) -> float:
    """Binary cross-entropy of sigmoid(z) against label y, from the logit (stable softplus)."""
    x = -z if y > 0.5 else z
    return max(x, 0.0) + np.log1p(np.exp(-abs(x)))


@njit(cache=True)
def _distinct_draws(u: np.ndarray, length: int, out: np.ndarray) -> None:
    """k = len(out) distinct uniform indices in [0, length) from k uniforms (sequential skip)."""
    k = out.shape[0]
    chosen = np.empty(k, np.int64)  # sorted ascending
    for t in range(k):
        r = int(u[t] * (length - t))
        if r >= length - t:
            r = length - t - 1
        pos = 0
        while pos < t and r >= chosen[pos]:
            r += 1
            pos += 1
        for s in range(t, pos, -1):
            chosen[s] = chosen[s - 1]
        chosen[pos] = r
        out[t] = r


@njit(cache=True, parallel=True)
def sample_round(pos_indptr, pos_items, excl_indptr, excl_items, n_items, n_neg,
                 neg_uniforms, shuffle_uniforms):
    """This round's training samples of every user, shuffled: (items, labels), CSR by user.

    User u's block holds each positive followed by ``n_neg`` distinct negatives drawn
    uniformly from the items u never interacted with (``excl`` lists all of u's
    interactions, train, validation and test; code ``store_all_train_data``), then is
    Fisher-Yates shuffled (the code's ``DataLoader(shuffle=True)``).
    Sample offsets are (1 + n_neg) * pos_indptr.
    """
    n_users = pos_indptr.shape[0] - 1
    total = pos_indptr[n_users] * (1 + n_neg)
    items = np.empty(total, np.int64)
    labels = np.empty(total, np.float64)
    for u in prange(n_users):
        mark = np.zeros(n_items, np.bool_)
        for q in range(excl_indptr[u], excl_indptr[u + 1]):
            mark[excl_items[q]] = True
        comp = np.empty(n_items, np.int64)
        n_comp = 0
        for j in range(n_items):
            if not mark[j]:
                comp[n_comp] = j
                n_comp += 1
        draws = np.empty(n_neg, np.int64)
        base = pos_indptr[u] * (1 + n_neg)
        for q in range(pos_indptr[u], pos_indptr[u + 1]):
            s = base + (q - pos_indptr[u]) * (1 + n_neg)
            items[s] = pos_items[q]
            labels[s] = 1.0
            _distinct_draws(neg_uniforms[q * n_neg:(q + 1) * n_neg], n_comp, draws)
            for t in range(n_neg):
                items[s + 1 + t] = comp[draws[t]]
                labels[s + 1 + t] = 0.0
        end = pos_indptr[u + 1] * (1 + n_neg)
        for i in range(end - base - 1, 0, -1):
            jj = int(shuffle_uniforms[base + i] * (i + 1))
            if jj > i:
                jj = i
            a, c = items[base + i], labels[base + i]
            items[base + i], labels[base + i] = items[base + jj], labels[base + jj]
            items[base + jj], labels[base + jj] = a, c
    return items, labels


@njit(cache=True)
def touched_rows(sample_indptr, items, n_items):
    """Per user, the sorted distinct items of its samples (CSR): the rows its update can change."""
    n_users = sample_indptr.shape[0] - 1
    counts = np.zeros(n_users + 1, np.int64)
    mark = np.zeros(n_items, np.int64) - 1
    for u in range(n_users):
        for s in range(sample_indptr[u], sample_indptr[u + 1]):
            if mark[items[s]] != u:
                mark[items[s]] = u
                counts[u + 1] += 1
    indptr = np.cumsum(counts)
    rows = np.empty(indptr[n_users], np.int64)
    mark[:] = -1
    for u in range(n_users):
        c = indptr[u]
        for s in range(sample_indptr[u], sample_indptr[u + 1]):
            if mark[items[s]] != u:
                mark[items[s]] = u
                rows[c] = items[s]
                c += 1
        rows[indptr[u]:indptr[u + 1]].sort()
    return indptr, rows


@njit(cache=True, parallel=True)
def train_users(E, W, B, users, sample_indptr, items, labels, row_indptr, rows,
                lr, lr_item, batch_size, joint, eval_items):
    """One local epoch for each user in ``users`` (all rows of the CSR inputs are per user).

    E: global table (M x K, read only). W (n_users x K) and B (n_users) hold every user's
    score function; the rows of ``users`` are updated in place. Returns
    (deltas, loss, eval_logits): deltas[row_indptr[u]:row_indptr[u+1]] is the change of
    user u's copy of rows[...] (zero elsewhere), loss[u] the mean BCE of its item
    steps, eval_logits[u] the logits of ``eval_items[u]`` under u's post-tuned table and
    score function (the paper's inference with its own model).
    """
    n_items, k_dim = E.shape
    deltas = np.zeros((rows.shape[0], k_dim))
    loss = np.zeros(W.shape[0])
    eval_logits = np.zeros(eval_items.shape, np.float64)
    for idx in prange(users.shape[0]):
        u = users[idx]
        r0, r1 = row_indptr[u], row_indptr[u + 1]
        slot = np.full(n_items, -1, np.int64)
        local = np.empty((r1 - r0, k_dim))
        for t in range(r1 - r0):
            slot[rows[r0 + t]] = t
            local[t] = E[rows[r0 + t]]
        w = W[u].copy()
        b = B[u]
        s0, s1 = sample_indptr[u], sample_indptr[u + 1]
        g = np.empty(batch_size)
        gw = np.empty(k_dim)
        total_loss = 0.0
        for start in range(s0, s1, batch_size):
            stop = min(start + batch_size, s1)
            nb = stop - start
            gw[:] = 0.0
            gb = 0.0
            for s in range(start, stop):
                e = local[slot[items[s]]]
                z = np.dot(w, e) + b
                g[s - start] = (_sigmoid(z) - labels[s]) / nb
                gw += g[s - start] * e
                gb += g[s - start]
                if joint:
                    total_loss += _bce(z, labels[s])
            if joint:  # both gradients at the same point
                w_item = w.copy()
                w -= lr * gw
                b -= lr * gb
            else:  # score step, then recompute the loss with the new score function
                w -= lr * gw
                b -= lr * gb
                for s in range(start, stop):
                    z = np.dot(w, local[slot[items[s]]]) + b
                    g[s - start] = (_sigmoid(z) - labels[s]) / nb
                    total_loss += _bce(z, labels[s])
                w_item = w
            for s in range(start, stop):
                local[slot[items[s]]] -= lr_item * g[s - start] * w_item
        for t in range(r1 - r0):
            deltas[r0 + t] = local[t] - E[rows[r0 + t]]
        if s1 > s0:
            loss[u] = total_loss / (s1 - s0)
        for c in range(eval_items.shape[1]):
            j = eval_items[u, c]
            e = local[slot[j]] if slot[j] >= 0 else E[j]
            eval_logits[u, c] = np.dot(w, e) + b
        W[u] = w
        B[u] = b
    return deltas, loss, eval_logits


@njit(cache=True, parallel=True)
def dense_uploads(row_indptr, rows, deltas, users, n_items, clip):
    """Row i: user ``users[i]``'s update as the dense M x K vector, flattened, each entry
    clipped to [-clip, clip] (zeros on untouched rows; pass ``clip = inf`` for none).

    One array for the whole round (no per-user allocation; rows are zeroed in parallel);
    returns it and the number of clipped entries per row.
    """
    k_dim = deltas.shape[1]
    out = np.empty((users.shape[0], n_items * k_dim))
    clipped = np.zeros(users.shape[0], np.int64)
    for i in prange(users.shape[0]):
        out[i] = 0.0
        u = users[i]
        for t in range(row_indptr[u], row_indptr[u + 1]):
            base = rows[t] * k_dim
            for c in range(k_dim):
                x = deltas[t, c]
                if x > clip:
                    x = clip
                    clipped[i] += 1
                elif x < -clip:
                    x = -clip
                    clipped[i] += 1
                out[i, base + c] = x
    return out, clipped


@njit(cache=True, parallel=True)
def clip_rows(X, clip):
    """Clip every entry of X to [-clip, clip] in place; the number clipped per row."""
    clipped = np.zeros(X.shape[0], np.int64)
    for i in prange(X.shape[0]):
        for c in range(X.shape[1]):
            if X[i, c] > clip:
                X[i, c] = clip
                clipped[i] += 1
            elif X[i, c] < -clip:
                X[i, c] = -clip
                clipped[i] += 1
    return clipped


def global_logits(E: np.ndarray, W: np.ndarray, B: np.ndarray, eval_items: np.ndarray) -> np.ndarray:
    """Logits of each user's eval items under the shared table E and its own (w, b)."""
    return np.einsum("uck,uk->uc", E[eval_items], W) + B[:, None]
