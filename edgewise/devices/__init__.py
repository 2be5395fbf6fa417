"""Device profiles: one YAML per device."""
