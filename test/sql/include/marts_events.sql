-- Helpers of the marts tests: ev() makes one event's JSON (id, user, time,
-- type, then optional key=value pairs; a value of digits, '.' and 'e' is a
-- JSON number), gold_bad() lists the gold tables verify_gold() finds off.
CREATE FUNCTION ev(id text, usr text, ts text, typ text DEFAULT 'page_view', VARIADIC kv text[] DEFAULT '{}')
RETURNS text LANGUAGE sql AS $$
	SELECT jsonb_build_object('event_id', id, 'user_id', usr, 'ts', ts, 'event_type', typ)
		   || coalesce((SELECT jsonb_object_agg(split_part(x, '=', 1),
				CASE WHEN split_part(x, '=', 2) ~ '^[0-9.e]+$' THEN to_jsonb(split_part(x, '=', 2)::numeric)
					 ELSE to_jsonb(split_part(x, '=', 2)) END)
				FROM unnest(kv) x), '{}')
$$;
CREATE FUNCTION gold_bad() RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(format('%s(-%s,+%s)', mart, missing, unexpected), ' '), 'ok')
	FROM clickstream.verify_gold() WHERE NOT ok $$;
