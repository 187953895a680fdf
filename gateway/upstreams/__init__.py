"""What the upstreams know about a customer: federation over the adapters, the upstream cache, its
serializer and the guarded Redis client, single flight, behaviour from events."""
