"""Fast Paillier for numpy vectors: CRT and fixed-base obfuscation, packing, phe interop.

Quick start::

    import numpy as np
    from secagg.paillier import generate_keypair, EncryptedVector, PackedEncryptedVector, choose_layout

    pk, sk = generate_keypair()                       # 2048-bit n
    a = EncryptedVector.encrypt(sk, np.array([0.5, -1.25]))   # private key: exact CRT fast path
    b = EncryptedVector.encrypt(pk, np.array([1.0, 2.0]))     # public key: DJN fixed-base path
    print((a + b * 3).decrypt(sk))                    # [ 3.5   4.75]

    layout = choose_layout(clip=1.0, precision_bits=16, max_summands=1000, key_bits=pk.bits)
    xs = [np.random.default_rng(i).uniform(-1, 1, 16820) for i in range(3)]
    total = PackedEncryptedVector.sum([PackedEncryptedVector.encrypt(sk, x, layout) for x in xs])
    print(np.abs(total.decrypt(sk) - sum(xs)).max() <= 3 * layout.step)   # True
"""

from .codec import FixedPointCodec
from .keys import DEFAULT_KEY_BITS, PrivateKey, PublicKey, generate_keypair
from .obfuscation import (
    CRTObfuscator,
    DJNObfuscator,
    Obfuscator,
    ObfuscatorPool,
    PoolExhaustedError,
    clear_default_obfuscators,
    default_obfuscator,
)
from .packing import PackingLayout, choose_layout
from .parallel import close_executors
from .serialization import (
    check_group_membership,
    private_key_from_bytes,
    private_key_from_json,
    private_key_to_bytes,
    private_key_to_json,
    public_key_from_bytes,
    public_key_from_json,
    public_key_to_bytes,
    public_key_to_json,
    vector_from_bytes,
    vector_from_json,
)
from .vector import EncryptedVector, PackedEncryptedVector, decrypt_integers, encrypt_integers

__all__ = [
    "DEFAULT_KEY_BITS",
    "CRTObfuscator",
    "DJNObfuscator",
    "EncryptedVector",
    "FixedPointCodec",
    "Obfuscator",
    "ObfuscatorPool",
    "PackedEncryptedVector",
    "PackingLayout",
    "PoolExhaustedError",
    "PrivateKey",
    "PublicKey",
    "check_group_membership",
    "choose_layout",
    "clear_default_obfuscators",
    "close_executors",
    "decrypt_integers",
    "default_obfuscator",
    "encrypt_integers",
    "generate_keypair",
    "private_key_from_bytes",
    "private_key_from_json",
    "private_key_to_bytes",
    "private_key_to_json",
    "public_key_from_bytes",
    "public_key_from_json",
    "public_key_to_bytes",
    "public_key_to_json",
    "vector_from_bytes",
    "vector_from_json",
]
