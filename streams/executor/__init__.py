"""The executor: carries out warmup leases on a model server (``warmcast executor``)."""
