"""Model definitions as tvm.relax.frontend.nn modules."""
