"""Second factors: TOTP (RFC 6238, via pyotp), WebAuthn/passkeys (via py_webauthn) and one-time
recovery codes.

* TOTP seeds are stored AES-256-GCM encrypted under a key derived (HKDF) from the instance's
  secret, bound to the account, so a copy of the database alone yields no usable seed. A code is
  accepted for the current 30-second step or one step either side (clock skew), and never twice:
  the last accepted step is kept and any step at or before it is refused (replay).
* WebAuthn: registration and assertion verified by py_webauthn against the clinic's relying
  party ID and origins; the signature counter must move forward when the authenticator keeps one
  (a cloned authenticator is refused).
* Recovery codes: 10 random codes shown once, stored as keyed hashes, each usable once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pyotp
import segno
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from mamori.errors import InvalidInput

ISSUER = "mamori"
TOTP_SKEW_STEPS = 1
RECOVERY_CODES = 10


def _factor_key(pepper: bytes) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mamori factor secrets v1"
    ).derive(pepper)
    return AESGCM(key)


def seal_secret(pepper: bytes, user_id: uuid.UUID, kind: str, secret: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    aad = user_id.bytes + kind.encode()
    return nonce + _factor_key(pepper).encrypt(nonce, secret, aad)


def open_secret(pepper: bytes, user_id: uuid.UUID, kind: str, sealed: bytes) -> bytes:
    aad = user_id.bytes + kind.encode()
    return _factor_key(pepper).decrypt(sealed[:12], sealed[12:], aad)


# --- TOTP ------------------------------------------------------------------------------------


def new_totp_seed() -> str:
    return pyotp.random_base32(length=32)  # 160 bits, as RFC 4226 recommends


def totp_uri(seed: str, account: str, clinic_name: str) -> str:
    return pyotp.TOTP(seed).provisioning_uri(name=account, issuer_name=f"{ISSUER} {clinic_name}")


def qr_svg(uri: str) -> str:
    """An SVG QR code for an authenticator app (drawn here, no third-party service). A
    ``viewBox`` and no fixed size, so it scales to whatever box the page gives it (a fixed
    372 px drawing in a 200 px box showed a quarter of the code); dark on white with the
    four-module quiet zone, which phone cameras need."""
    code = segno.make(uri, error="m")
    return str(
        code.svg_inline(
            scale=4, omitsize=True, dark="#000", light="#fff", title="認証アプリ用 QR コード"
        )
    )


def grouped(secret: str) -> str:
    """The manual key in blocks of four, as authenticator apps show and accept it."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def totp_step(seed: str, code: str, last_step: int | None, now: float | None = None) -> int | None:
    """The time step the code belongs to, if it is valid and newer than ``last_step``."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(seed)
    current = totp.timecode(time.time() if now is None else now)
    for step in range(current - TOTP_SKEW_STEPS, current + TOTP_SKEW_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if last_step is not None and step <= last_step:
                return None  # replayed (or an older code after a newer one was used)
            return step
    return None


# --- recovery codes ----------------------------------------------------------------------------


def new_recovery_codes() -> list[str]:
    """Codes like ``k7fq-2m9x-hp4c``: 60 bits each, unambiguous alphabet."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    out = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(alphabet) for _ in range(12))
        out.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return out


def recovery_hash(pepper: bytes, code: str) -> str:
    normal = code.strip().lower().replace("-", "").replace(" ", "")
    return hmac.new(pepper, b"recovery:" + normal.encode(), hashlib.sha256).hexdigest()


# --- WebAuthn ----------------------------------------------------------------------------------


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_id: uuid.UUID,
    login: str,
    display_name: str,
    existing: Sequence[bytes],
) -> tuple[bytes, dict[str, Any]]:
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=user_id.bytes,
        user_name=login,
        user_display_name=display_name,
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in existing],
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
    )
    return options.challenge, json.loads(options_to_json(options))


def verify_registration(
    credential: dict[str, Any], *, challenge: bytes, rp_id: str, origins: Sequence[str]
) -> tuple[bytes, bytes, int]:
    """(credential ID, COSE public key, sign count) of a verified new credential."""
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
        )
    except (InvalidRegistrationResponse, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(
            "パスキーを登録できませんでした。もう一度お試しください。",
            f"The passkey could not be registered: {exc}",
            field="credential",
        ) from None
    return verified.credential_id, verified.credential_public_key, verified.sign_count


def authentication_options(
    rp_id: str, credentials: Sequence[bytes]
) -> tuple[bytes, dict[str, Any]]:
    options = generate_authentication_options(
        rp_id=rp_id,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in credentials],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options.challenge, json.loads(options_to_json(options))


def credential_id_of(credential: dict[str, Any]) -> bytes | None:
    raw = credential.get("rawId") or credential.get("id")
    if not isinstance(raw, str) or len(raw) > 1400:
        return None
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError:
        return None


def verify_assertion(
    credential: dict[str, Any],
    *,
    challenge: bytes,
    rp_id: str,
    origins: Sequence[str],
    public_key: bytes,
    sign_count: int,
) -> int | None:
    """The new signature counter if the assertion is valid, else None."""
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=list(origins),
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
        )
    except (InvalidAuthenticationResponse, ValueError, KeyError, TypeError):
        return None
    return int(verified.new_sign_count)
