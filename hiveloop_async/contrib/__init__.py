"""Optional integrations (hiveloop 0.2.0 path: ``hiveloop.contrib``)."""
