"""Live sources of VM usage: Azure Monitor platform metrics (the default) and Prometheus.

Each turns a list of :class:`~rightsizer.domain.VmInfo` into one :data:`~rightsizer.metrics.Usage` per VM id
(a skip with its reason when a VM cannot be measured). Offline files are read by :mod:`rightsizer.inputs`.
"""
