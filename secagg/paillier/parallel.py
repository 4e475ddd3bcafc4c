"""Optional process pool (``workers=``) for bulk encryption, decryption and pool filling.

Paillier encryptions and decryptions are independent, so they split across processes
(CPython holds the GIL during gmpy2 calls). Each worker rebuilds the key and the
obfuscation tables once (initializer); tasks carry plain integers only. Executors are
cached per (key, obfuscation source, workers) and reused across calls.
"""

from __future__ import annotations

import atexit
import json
from concurrent.futures import ProcessPoolExecutor

from gmpy2 import mpz

from ..errors import InvalidInputError
from .keys import PrivateKey, PublicKey
from .obfuscation import CRTObfuscator, DJNObfuscator, Obfuscator

_EXECUTORS: dict[tuple, ProcessPoolExecutor] = {}
_STATE: dict[str, object] = {}


def check_workers(workers: int | None) -> int:
    if workers is None:
        return 1
    if not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def _key_numbers(source: Obfuscator) -> tuple:
    if isinstance(source, CRTObfuscator):
        sk = source.private_key
        return (int(sk.public_key.n), int(sk.p), int(sk.q), sk.p_factors, sk.q_factors)
    return (int(source.public_key.n),)


def _init(key_numbers: tuple, spec_json: str, private: tuple | None) -> None:
    pk = PublicKey(mpz(key_numbers[0]))
    spec = json.loads(spec_json)
    sk = None
    if private is not None:
        sk = PrivateKey(pk, mpz(private[0]), mpz(private[1]), private[2], private[3])
    if spec["name"] == "crt":
        obf = CRTObfuscator(sk)
    elif spec["name"] == "djn":
        obf = DJNObfuscator(pk, exponent_bits=spec["exponent_bits"], base=spec["base"])
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
    return ex


def _chunks(items: list, workers: int) -> list[list]:
    size = max(1, -(-len(items) // (4 * workers)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _task_encrypt(ms: list[int]) -> list[int]:
    pk, obf = _STATE["pk"], _STATE["obf"]
    n, n2 = pk.n, pk.nsquare
    return [int((1 + m * n) * r % n2) for m, r in zip(ms, obf.draw(len(ms)))]


def _task_draw(count: int) -> list[int]:
    return [int(r) for r in _STATE["obf"].draw(count)]


def _task_decrypt(cs: list[int]) -> list[int]:
    from .scheme import decrypt

    sk = _STATE["sk"]
    return [int(decrypt(sk, mpz(c))) for c in cs]


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
    private = nums[1:] if len(nums) > 1 else None
    ex = _executor(nums[:1], source.spec(), private, workers)
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
    private = nums[1:] if len(nums) > 1 else None
    ex = _executor(nums[:1], source.spec(), private, workers)
    out: list[mpz] = []
    for part in ex.map(_task_encrypt, _chunks([int(m) for m in plaintexts], workers)):
        out.extend(mpz(c) for c in part)
    return out


def draw_obfuscators(source: Obfuscator, count: int, workers: int) -> list[mpz]:
    nums = _key_numbers(source)
    private = nums[1:] if len(nums) > 1 else None
    ex = _executor(nums[:1], source.spec(), private, workers)
    sizes = [len(c) for c in _chunks(list(range(count)), workers)]
    out: list[mpz] = []
    for part in ex.map(_task_draw, sizes):
        out.extend(mpz(r) for r in part)
    return out


def parallel_decrypt(sk: PrivateKey, ciphertexts: list[mpz], workers: int) -> list[mpz]:
    private = (int(sk.p), int(sk.q), sk.p_factors, sk.q_factors)
    ex = _executor((int(sk.public_key.n),), {"name": "decrypt"}, private, workers)
    out: list[mpz] = []
    for part in ex.map(_task_decrypt, _chunks([int(c) for c in ciphertexts], workers)):
        out.extend(mpz(m) for m in part)
    return out


@atexit.register
def _shutdown() -> None:
    for ex in _EXECUTORS.values():
        ex.shutdown(wait=False, cancel_futures=True)
    _EXECUTORS.clear()
