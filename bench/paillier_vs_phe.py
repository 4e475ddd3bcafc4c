"""secagg.paillier against python-paillier (phe) at 2048 bits, same key, same run, same machine.

Per value: encrypt (total cost including obfuscation), decrypt, homomorphic add, bytes
on the wire; ours unpacked (one value per ciphertext) and packed (BatchCrypt-style).

* phe: ``encrypt(x, precision=1e-5)`` (FedMF's setting), ``decrypt``, ``a + b`` with equal
  exponents; bytes = one fixed-width ciphertext (512 B) per value (phe has no wire
  format; its exponent is not counted, which favours phe).
* ours, headline (a FedMF client, who holds the private key): CRT fixed-base
  obfuscation, single process. The one-off table set-up per key is reported
  separately (``setup_seconds``) and also amortised over one upload.
* ours, other paths (extra rows): DJN public-key encryption, a precomputed obfuscator
  pool (fill cost and online cost separately), ``workers=2``.
* packed layout: clip 1, 16-bit quantization, headroom for 1024 summands (FedMF on
  MovieLens-100K has 943 users); values uniform in [-1, 1]; the packed vector has the
  length of one MovieLens-100K FullText upload (1682 items x 10 factors = 16,820).

Each timing is the median of ``--repeats`` runs over a batch; per-value cost = batch
time / batch size. Ratios are phe cost / our cost (bytes: ours / phe).

    python bench/paillier_vs_phe.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import gmpy2
import numpy as np
import phe

from secagg.paillier import (
    CRTObfuscator,
    DJNObfuscator,
    EncryptedVector,
    FixedPointCodec,
    ObfuscatorPool,
    PackedEncryptedVector,
    choose_layout,
    generate_keypair,
)

KEY_BITS = 2048
UPLOAD = 1682 * 10


def timed(fn, repeats):
    """Median wall time of ``repeats`` calls and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_phe(pk, sk, x, repeats):
    ppk, psk = pk.to_phe(), sk.to_phe()
    t_enc, enc = timed(lambda: [ppk.encrypt(float(v), precision=1e-5) for v in x], repeats)
    t_dec, dec = timed(lambda: [psk.decrypt(c) for c in enc], repeats)
    assert np.allclose(dec, x, atol=1e-5)
    other = [ppk.encrypt(float(v), precision=1e-5) for v in x]
    t_add, _ = timed(lambda: [a + b for a, b in zip(enc, other)], repeats)
    n = len(x)
    return {"values": n, "encrypt_s": t_enc / n, "decrypt_s": t_dec / n, "add_s": t_add / n,
            "bytes": pk.ciphertext_bytes}


def bench_unpacked(pk, sk, x, repeats, obf, workers=None):
    codec = FixedPointCodec.from_precision(1e-5)
    t_enc, a = timed(lambda: EncryptedVector.encrypt(sk, x, codec=codec, obfuscator=obf, workers=workers),
                     repeats)
    b = EncryptedVector.encrypt(sk, x, codec=codec, obfuscator=obf)
    t_dec, dec = timed(lambda: a.decrypt(sk, workers=workers), repeats)
    assert np.allclose(dec, x, atol=1e-5)
    t_add, _ = timed(lambda: a + b, repeats)
    n = len(x)
    return {"values": n, "encrypt_s": t_enc / n, "decrypt_s": t_dec / n, "add_s": t_add / n,
            "bytes": len(a.to_bytes()) / n, "obfuscation": obf.name, "assumption": obf.assumption,
            "setup_seconds": obf.setup_seconds}


def bench_packed(pk, sk, x, repeats, obf, layout, workers=None):
    key = sk if obf.name == "crt" else pk
    t_enc, a = timed(lambda: PackedEncryptedVector.encrypt(key, x, layout, obfuscator=obf, workers=workers),
                     repeats)
    b = PackedEncryptedVector.encrypt(key, x, layout, obfuscator=obf)
    t_dec, dec = timed(lambda: a.decrypt(sk, workers=workers), repeats)
    assert np.all(np.abs(dec - x) <= layout.step)
    t_add, s = timed(lambda: a + b, repeats)
    assert np.all(np.abs(s.decrypt(sk) - 2 * x) <= 2 * layout.step)
    n = len(x)
    return {"values": n, "ciphertexts": len(a.ciphertexts), "encrypt_s": t_enc / n,
            "decrypt_s": t_dec / n, "add_s": t_add / n, "bytes": len(a.to_bytes()) / n,
            "obfuscation": obf.name, "assumption": obf.assumption, "setup_seconds": obf.setup_seconds,
            "encrypt_s_with_setup_amortised_over_one_upload": (t_enc + obf.setup_seconds) / n,
            "workers": workers or 1}


def bench_pool(sk, x, layout):
    pool = ObfuscatorPool(CRTObfuscator(sk))
    fill = pool.fill(layout.ciphertexts_for(len(x)))
    t0 = time.perf_counter()
    PackedEncryptedVector.encrypt(sk, x, layout, obfuscator=pool)
    online = time.perf_counter() - t0
    n = len(x)
    return {"values": n, "fill_s_per_value": fill / n, "online_encrypt_s_per_value": online / n,
            "total_s_per_value": (fill + online) / n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batches, finishes in < 60 s")
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    n_phe, n_unpacked = (20, 100) if quick else (200, 1000)
    rng = np.random.default_rng(0)

    t0 = time.perf_counter()
    pk, sk = generate_keypair(KEY_BITS)
    keygen = time.perf_counter() - t0
    layout = choose_layout(clip=1.0, precision_bits=16, max_summands=1024, key_bits=pk.bits)
    crt, djn = CRTObfuscator(sk), DJNObfuscator(pk)

    res = {"key_bits": pk.bits, "quick": quick, "repeats": repeats, "keygen_seconds": keygen,
           "layout": layout.describe(),
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "phe": phe.__version__ if hasattr(phe, "__version__") else "1.5",
                       "gmpy2": gmpy2.version(), "gmp": gmpy2.mp_version()}}
    res["phe"] = bench_phe(pk, sk, rng.uniform(-1, 1, n_phe), repeats)
    xu = rng.uniform(-1, 1, n_unpacked)
    res["ours_unpacked"] = bench_unpacked(pk, sk, xu, repeats, crt)
    res["ours_unpacked_public_djn"] = bench_unpacked(pk, sk, xu, repeats, djn)
    xp = rng.uniform(-1, 1, UPLOAD)
    PackedEncryptedVector.encrypt(sk, xp[:10], layout)  # load the numba kernels
    res["ours_packed"] = bench_packed(pk, sk, xp, repeats, crt, layout)
    res["ours_packed_public_djn"] = bench_packed(pk, sk, xp, repeats, djn, layout)
    res["ours_packed_pool"] = bench_pool(sk, xp, layout)
    if not quick:
        res["ours_packed_workers2"] = bench_packed(pk, sk, xp, repeats, crt, layout, workers=2)

    p, u, k = res["phe"], res["ours_unpacked"], res["ours_packed"]
    res.update(
        encrypt_speedup_packed=p["encrypt_s"] / k["encrypt_s"],
        decrypt_speedup_packed=p["decrypt_s"] / k["decrypt_s"],
        add_speedup_packed=p["add_s"] / k["add_s"],
        encrypt_speedup_unpacked=p["encrypt_s"] / u["encrypt_s"],
        decrypt_speedup_unpacked=p["decrypt_s"] / u["decrypt_s"],
        add_speedup_unpacked=p["add_s"] / u["add_s"],
        bytes_ratio_packed=k["bytes"] / p["bytes"],
        bytes_ratio_unpacked=u["bytes"] / p["bytes"],
        encrypt_speedup_packed_public_djn=p["encrypt_s"] / res["ours_packed_public_djn"]["encrypt_s"],
        encrypt_speedup_unpacked_public_djn=p["encrypt_s"] / res["ours_unpacked_public_djn"]["encrypt_s"],
        encrypt_speedup_packed_with_setup=p["encrypt_s"] / k["encrypt_s_with_setup_amortised_over_one_upload"],
        upload_16820_values_seconds={
            "phe_extrapolated_from_per_value": p["encrypt_s"] * UPLOAD,
            "ours_packed_measured": k["encrypt_s"] * UPLOAD,
        },
    )
    print_table(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2, default=str)


def print_table(res):
    rows = [("phe 1.5 (precision 1e-5)", res["phe"]), ("ours unpacked (CRT)", res["ours_unpacked"]),
            ("ours unpacked (DJN public key)", res["ours_unpacked_public_djn"]),
            ("ours packed (CRT)", res["ours_packed"]), ("ours packed (DJN public key)", res["ours_packed_public_djn"])]
    if "ours_packed_workers2" in res:
        rows.append(("ours packed (CRT, workers=2)", res["ours_packed_workers2"]))
    print(f"{res['key_bits']}-bit keys; per value")
    print(f"| {'':32} | encrypt (us) | decrypt (us) | add (us) | bytes |")
    print(f"|{'-' * 34}|-------------:|-------------:|---------:|------:|")
    for name, r in rows:
        print(f"| {name:32} | {r['encrypt_s'] * 1e6:12.2f} | {r['decrypt_s'] * 1e6:12.2f} | "
              f"{r['add_s'] * 1e6:8.3f} | {r['bytes']:5.1f} |")
    pool = res["ours_packed_pool"]
    print(f"packed with obfuscator pool: fill {pool['fill_s_per_value'] * 1e6:.2f} us/value (offline), "
          f"online {pool['online_encrypt_s_per_value'] * 1e6:.2f} us/value")
    for key in ("encrypt_speedup_packed", "decrypt_speedup_packed", "add_speedup_packed",
                "encrypt_speedup_unpacked", "bytes_ratio_packed"):
        print(f"{key}: {res[key]:.4g}")


if __name__ == "__main__":
    main()
