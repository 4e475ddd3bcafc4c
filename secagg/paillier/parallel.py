"""Optional process pool (``workers=``) for bulk encryption, decryption and pool filling.

Paillier encryptions and decryptions are independent, so they split across processes
(CPython holds the GIL during gmpy2 calls). Each worker rebuilds the key and the
obfuscation tables once (initializer); tasks carry plain integers only. Executors are
cached per (key, obfuscation source, workers) and reused across calls; the cache holds
at most ``MAX_EXECUTORS`` of them (least recently used ones are shut down), and
:func:`close_executors` shuts down those of one key (or all): backends call it from
their ``close()``.
"""

from __future__ import annotations

import atexit
import json
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor

from gmpy2 import mpz

from ..backend import check_workers
from .keys import PrivateKey, PublicKey
from .obfuscation import CRTObfuscator, DJNObfuscator, Obfuscator
from .scheme import encrypt_many

__all__ = ["check_workers", "close_executors", "draw_obfuscators", "map_with_key",
           "parallel_decrypt", "parallel_decrypt_timed", "parallel_encrypt"]

#: most process pools kept alive at once (each holds ``workers`` processes)
MAX_EXECUTORS = 2
_EXECUTORS: OrderedDict[tuple, ProcessPoolExecutor] = OrderedDict()
_STATE: dict[str, object] = {}


def _key_numbers(source: Obfuscator) -> tuple:
    """(n, small-key opt-in) and, for a CRT source, the private numbers."""
    pk = source.public_key
    head = (int(pk.n), pk.allow_insecure_small_key)
    sk = getattr(source, "private_key", None)
    if sk is not None:  # CRT, or DJN computed through CRT by a key holder
        return (*head, int(sk.p), int(sk.q), sk.p_factors, sk.q_factors)
    return head


def _init(key_numbers: tuple, spec_json: str, private: tuple | None) -> None:
    pk = PublicKey(mpz(key_numbers[0]), allow_insecure_small_key=key_numbers[1])
    spec = json.loads(spec_json)
    sk = None
    if private is not None:
        sk = PrivateKey(pk, mpz(private[0]), mpz(private[1]), private[2], private[3])
    if spec["name"] == "crt":
        obf = CRTObfuscator(sk)
    elif spec["name"] == "djn":
        obf = DJNObfuscator(pk, exponent_bits=spec["exponent_bits"], generator=spec["generator"],
                            private_key=sk)
    else:
        obf = None
    _STATE.update(pk=pk, sk=sk, obf=obf)


def _executor(key_numbers: tuple, spec: dict, private: tuple | None, workers: int):
    spec_json = json.dumps(spec, sort_keys=True)
    cache_key = (key_numbers[0], spec_json, private is not None, workers)
    ex = _EXECUTORS.get(cache_key)
    if ex is None:
        ex = ProcessPoolExecutor(workers, initializer=_init, initargs=(key_numbers, spec_json, private))
        _EXECUTORS[cache_key] = ex
        while len(_EXECUTORS) > MAX_EXECUTORS:
            _EXECUTORS.popitem(last=False)[1].shutdown(wait=False, cancel_futures=True)
    _EXECUTORS.move_to_end(cache_key)
    return ex


def close_executors(key: PublicKey | PrivateKey | None = None) -> int:
    """Shut down the cached process pools of ``key`` (all pools if None); return how many."""
    if key is not None:
        n = int(key.public_key.n if isinstance(key, PrivateKey) else key.n)
        doomed = [k for k in _EXECUTORS if k[0] == n]
    else:
        doomed = list(_EXECUTORS)
    for k in doomed:
        _EXECUTORS.pop(k).shutdown(wait=True, cancel_futures=True)
    return len(doomed)


def _chunks(items: list, workers: int) -> list[list]:
    size = max(1, -(-len(items) // (4 * workers)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _task_encrypt(ms: list[int]) -> list[int]:
    pk, obf = _STATE["pk"], _STATE["obf"]
    return [int(c) for c in encrypt_many(pk, [mpz(m) for m in ms], obf.draw(len(ms)))]


def _task_draw(count: int) -> list[int]:
    return [int(r) for r in _STATE["obf"].draw(count)]


def _task_decrypt(cs: list[int]) -> tuple[list[int], float]:
    """Decrypt one chunk; also return the seconds it took in this process."""
    from .scheme import decrypt

    t0 = time.perf_counter()
    sk = _STATE["sk"]
    out = [int(decrypt(sk, mpz(c))) for c in cs]
    return out, time.perf_counter() - t0


def _task_call(args):
    fn, job = args
    key = _STATE["sk"] if _STATE["sk"] is not None else _STATE["pk"]
    return fn(key, _STATE["obf"], job)


def map_with_key(source: Obfuscator, fn, jobs, workers: int):
    """Yield fn(key, obfuscator, job) for each job, computed in ``workers`` processes, in order.

    ``fn`` must be a module-level function; the worker's key is the private key for a
    CRT source, else the public key. At most 2 x workers jobs are in flight, so inputs
    and results stay bounded.
    """
    nums = _key_numbers(source)
    private = nums[2:] if len(nums) > 2 else None
    ex = _executor(nums[:2], source.spec(), private, workers)
    pending = []
    for job in jobs:
        pending.append(ex.submit(_task_call, (fn, job)))
        if len(pending) >= 2 * workers:
            yield pending.pop(0).result()
    for fut in pending:
        yield fut.result()


def parallel_encrypt(source: Obfuscator, plaintexts: list[int], workers: int) -> list[mpz]:
    """(1 + m n) R mod n^2 for each m, obfuscators drawn inside ``workers`` processes."""
    nums = _key_numbers(source)
    private = nums[2:] if len(nums) > 2 else None
    ex = _executor(nums[:2], source.spec(), private, workers)
    out: list[mpz] = []
    for part in ex.map(_task_encrypt, _chunks([int(m) for m in plaintexts], workers)):
        out.extend(mpz(c) for c in part)
    return out


def draw_obfuscators(source: Obfuscator, count: int, workers: int) -> list[mpz]:
    nums = _key_numbers(source)
    private = nums[2:] if len(nums) > 2 else None
    ex = _executor(nums[:2], source.spec(), private, workers)
    sizes = [len(c) for c in _chunks(list(range(count)), workers)]
    out: list[mpz] = []
    for part in ex.map(_task_draw, sizes):
        out.extend(mpz(r) for r in part)
    return out


def parallel_decrypt(sk: PrivateKey, ciphertexts: list[mpz], workers: int) -> list[mpz]:
    return parallel_decrypt_timed(sk, ciphertexts, workers)[0]


def parallel_decrypt_timed(sk: PrivateKey, ciphertexts: list[mpz], workers: int) -> tuple[list[mpz], float]:
    """Plaintexts, and the sum of the chunks' seconds in their workers: what one process
    decrypting them all would have spent (the single-device cost, not the wall time)."""
    private = (int(sk.p), int(sk.q), sk.p_factors, sk.q_factors)
    head = (int(sk.public_key.n), sk.public_key.allow_insecure_small_key)
    ex = _executor(head, {"name": "decrypt"}, private, workers)
    out: list[mpz] = []
    seconds = 0.0
    for part, dt in ex.map(_task_decrypt, _chunks([int(c) for c in ciphertexts], workers)):
        out.extend(mpz(m) for m in part)
        seconds += dt
    return out, seconds


@atexit.register
def _shutdown() -> None:
    for ex in _EXECUTORS.values():
        ex.shutdown(wait=False, cancel_futures=True)
    _EXECUTORS.clear()
