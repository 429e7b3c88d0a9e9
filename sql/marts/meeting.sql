-- Each meeting known on the run date: the deal it was for, when it was logged, its kind, and the
-- title of the contact met (lower-cased and trimmed; NULL without a contact or a title).
-- The trajectory's meetings step reads it cut by deal: joining each slice's meetings to every
-- contact instead probed all of them once per slice (1.7M contacts, 57 slices on a million deals).
SELECT e.what_id, e.created_date, e.meeting_kind, lower(trim(c.title)) AS title
FROM staging.event AS e
LEFT JOIN staging.contact AS c ON c.id = e.who_id
