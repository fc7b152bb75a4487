"""Realtime on PostgreSQL alone: functions publish messages to a channel's topics, browsers and
servers subscribe with a short-lived token (Inngest's realtime, spoken as the JS SDK 4.x speaks it).

A published message is stored (pgqueue.realtime_messages, kept minutes) and announced with a NOTIFY
carrying its id; every API process reads the messages its own subscribers want and sends them on
(`hub`). `tokens` mints and checks subscription tokens, `publishing` turns a publish request into
stored messages, `streams` cuts streamed bodies (a durable endpoint's SSE, a streamed publish) into
messages. The HTTP surface is api/routes/realtime.py.
"""
