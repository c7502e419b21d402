"""A gRPC client no one here wrote (grpcio, BoringSSL) calls an idmesh node over TLS.

Usage: grpc_over_tls.py ADDR CA_FILE WRONG_CA_FILE SITE
Prints one line per check; exits non-zero on the first that fails.
"""
import sys

import grpc

addr, ca_file, wrong_ca_file, site = sys.argv[1:5]
METHOD = "/idmesh.v1.Site/GetSiteStatus"


def call(channel):
    # GetSiteStatusRequest has no fields: its encoding is empty. The answer is read as bytes.
    stub = channel.unary_unary(METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return stub(b"", timeout=10)


with open(ca_file, "rb") as f:
    ca = f.read()
with open(wrong_ca_file, "rb") as f:
    wrong_ca = f.read()

with grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
    answer = call(channel)
    assert site.encode() in answer, f"the status does not name site {site}: {answer!r}"
    print("ok: status over TLS verified with the site CA")

for name, channel in [
    ("a plaintext client", grpc.insecure_channel(addr)),
    ("a client trusting another CA", grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=wrong_ca))),
]:
    with channel:
        try:
            call(channel)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, f"{name}: {e.code()}"
            print(f"ok: {name} is refused ({e.code().name})")
        else:
            sys.exit(f"{name} was served")
