"""Online endpoints: keys, deployments, the gateway in front of instances, and their processes."""
