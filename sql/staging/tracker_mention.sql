-- Call-recorder tracker hits said on or before the run date.
-- topic (competitor | pricing | discount | security | integration | technical_blocker | legal) is the
-- lake profile's reading of the recorder's tracker names.
SELECT id, call_id, opportunity_id, mentioned_at, LOWER(tracker) AS tracker,
  {{concept:tracker_mention.tracker_topic}} AS topic, speaker_side,
  speaker_contact_id, phrase
FROM known.tracker_mention
