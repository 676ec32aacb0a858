"""perpdex: reference model, client, keepers and simulator for the perpdex contracts."""
