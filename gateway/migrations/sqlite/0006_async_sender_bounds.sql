-- The per-sender async quota counts a sender's messages on delivery.
CREATE INDEX async_messages_sender_state ON async_messages (sender, state);

-- Message ids have one form, the lower-case UUID (the signature and the replay guard already used
-- it). Ids stored as sent take that form, unless another message of the same sender differs from
-- it only in case: those were accepted as separate messages and keep their spelling.
UPDATE async_messages SET message_id = LOWER(message_id)
WHERE message_id <> LOWER(message_id)
  AND NOT EXISTS (
      SELECT 1 FROM async_messages AS other
      WHERE other.sender = async_messages.sender
        AND other.id <> async_messages.id
        AND LOWER(other.message_id) = LOWER(async_messages.message_id)
  );
