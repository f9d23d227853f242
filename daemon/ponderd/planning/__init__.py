"""What effort a query gets: policy files, the routing table, expected loss, accuracy profiles, calibrate and simulate."""
