"""Local real components: Kafka broker, S3 server."""
