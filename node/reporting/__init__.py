"""What the node reports to the district: host readings (system), heartbeat snapshot/delta decisions
(heartbeat, pure), and the durable outbox for events and proof-of-play records (outbox). See docs/heartbeat.md."""
