"""Verifies an idmesh access token with PyJWT, a library idmesh did not write.

usage: verify_with_pyjwt.py JWKS_FILE TOKEN ISSUER AUDIENCE
Prints the claims as JSON and exits 0 if the token verifies; prints the error and exits 1 if not.
"""
import json
import sys

import jwt


def main() -> int:
    jwks_path, token, issuer, audience = sys.argv[1:5]
    with open(jwks_path, encoding="utf-8") as f:
        jwks = json.load(f)
    header = jwt.get_unverified_header(token)
    matching = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if not matching:
        print(f"no key {header.get('kid')!r} in the JWKS", file=sys.stderr)
        return 1
    key = jwt.PyJWK(matching[0]).key
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
    except jwt.PyJWTError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
