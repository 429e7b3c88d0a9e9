-- Call-recorder tracker hits said on or before the run date.
SELECT id, call_id, opportunity_id, mentioned_at, LOWER(tracker) AS tracker, speaker_side,
  speaker_contact_id, phrase
FROM known.tracker_mention
