"""Event stream ingestion: Segment Track/Identify/Page messages consumed from Redis
Streams or NATS JetStream (one transport interface), stored in batches in the events
table the webhook path writes, acknowledged after the commit, poison to a dead letter."""
