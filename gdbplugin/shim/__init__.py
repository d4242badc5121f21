"""The reference stage-2 shim: AArch64 sources (built by scripts/build-shim), the loader of its
parameter block (launch.py) and the decoder of its event ring (ring.py).  See README.md."""
