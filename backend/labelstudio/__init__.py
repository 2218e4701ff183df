"""Label Studio integration: its API client, the label config, annotations as labels, the prediction format."""
