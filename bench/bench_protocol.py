"""Throughput of the secure session, next to the raw primitives it is built from.

Prints handshakes per second and AEAD frames per second.  Each figure stands beside a baseline
measured in the same run from the same primitives called directly (SPAKE2 from ``spake2``;
Ed25519, HKDF, HMAC and ChaCha20-Poly1305 from ``cryptography``/``hashlib``), so the ratio is
the cost of framing, validation, transcript handling and the state machines - not of the
machine.

    python bench/bench_protocol.py [--seconds 2.0] [--quick] [--json FILE]
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from common import Result, finish, parser, result
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from iob_protocol import ClientSession, DeviceIdentity, DeviceSession, SetupCode
from spake2 import SPAKE2_A, SPAKE2_B

FRAME_SIZES = (64, 1024, 8192)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``operation`` over about ``seconds`` (after one warm-up call)."""
    operation()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        operation()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def protocol_handshake(identity: DeviceIdentity, code: SetupCode) -> Callable[[], object]:
    """One complete handshake through the state machines, frames included."""
    qr = code.qr_payload(identity.fingerprint)

    def run() -> object:
        client = ClientSession.for_qr(qr)
        device = DeviceSession(identity, code)
        finish = client.handle_device_hello(device.handle_client_hello(client.start()))
        device.handle_client_finish(finish)
        return device

    return run


def raw_handshake() -> Callable[[], object]:
    """The same primitives, called directly, the same number of times."""
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    password = hashlib.sha256(b"password").digest()

    def run() -> object:
        client = SPAKE2_A(password, idA=b"client", idB=b"device")
        device = SPAKE2_B(password, idA=b"client", idB=b"device")
        client_message, device_message = client.start(), device.start()
        keys = []
        transcript = hashlib.sha256(client_message + device_message).digest()
        signature = private_key.sign(transcript)
        public_key.verify(signature, transcript)
        for pake_key in (client.finish(device_message), device.finish(client_message)):
            material = HKDF(hashes.SHA256(), 128, transcript, b"info").derive(pake_key)
            confirm_device = hmac.digest(material[:32], transcript, "sha256")
            confirm_client = hmac.digest(material[32:64], confirm_device, "sha256")
            keys.append(confirm_client)
        return keys

    return run


def protocol_frames(identity: DeviceIdentity, code: SetupCode, size: int) -> Callable[[], object]:
    """Seal on the client, open on the device: one frame each way through the channel."""
    client = ClientSession.for_qr(code.qr_payload(identity.fingerprint))
    device = DeviceSession(identity, code)
    device.handle_client_finish(
        client.handle_device_hello(device.handle_client_hello(client.start()))
    )
    payload = os.urandom(size)

    def run() -> object:
        return device.open(client.seal(payload))

    return run


def raw_frames(size: int) -> Callable[[], object]:
    """ChaCha20-Poly1305 encrypt and decrypt of the same payload with a counter nonce."""
    aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())
    payload = os.urandom(size)
    aad = os.urandom(22)
    counter = 0

    def run() -> object:
        nonlocal counter
        nonce = bytes(4) + counter.to_bytes(8, "big")
        counter += 1
        return aead.decrypt(nonce, aead.encrypt(nonce, payload, aad), aad)

    return run


def report(name: str, ours: float, baseline: float) -> Result:
    """One row: ours, the raw primitives' baseline, the ratio."""
    return result(f"protocol: {name}", ours, "/s", baseline, "raw primitives")


def main() -> None:
    """Run every measurement; about 8 x ``--seconds`` in total."""
    options = parser(__doc__)
    options.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = options.parse_args()
    seconds = 0.2 if args.quick else args.seconds
    identity = DeviceIdentity.generate()
    code = SetupCode.generate(identity.device_id)
    rows = [
        report(
            "handshakes",
            rate(protocol_handshake(identity, code), seconds),
            rate(raw_handshake(), seconds),
        )
    ]
    rows += [
        report(
            f"AEAD frames ({size} B, seal+open)",
            rate(protocol_frames(identity, code, size), seconds / 2),
            rate(raw_frames(size), seconds / 2),
        )
        for size in FRAME_SIZES
    ]
    finish("protocol", rows, args, seconds=seconds)


if __name__ == "__main__":
    main()
