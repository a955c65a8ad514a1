-- Traces (issue 14): a webhook delivery keeps the traceparent of the stream
-- message it delivers, and sends it (W3C Trace Context) with every attempt.
ALTER TABLE bc_notification.webhook_deliveries ADD COLUMN traceparent TEXT;
