"""chattune studio: a REST control plane over the workspace's services (`chattune studio`)."""
