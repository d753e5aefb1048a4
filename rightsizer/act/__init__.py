"""The acting side of the rightsizer: the one place that changes Azure (apply, recover, approve, Spot)."""
