/*
 * replica.h: this replica's id.
 *
 * Operation ids start with the tag of the replica that runs them (operations.h), and replicas tell each other apart by
 * it (peers.h). It is not taken from the identity certificate: replicas may share one identity and server certificate
 * (the same configuration deployed everywhere). It is 8 lowercase hex digits kept in state_dir/replica-id, drawn at
 * random at the first start (written whole to a temporary file, synced, then renamed into place without replacing
 * one that exists) and read at every later start. Each replica needs its own state_dir: two that share an id (one
 * state_dir copied to another host) cannot tell their operations apart, and the newcomer stops (peers.c).
 */
#ifndef GW_REPLICA_H
#define GW_REPLICA_H

#define GW_REPLICA_ID_LEN 8

/* reads state_dir/replica-id, or makes it when there is none; returns NULL, or why the replica cannot start (the
 * file's path in it; valid until the next call). The file holds exactly 8 lowercase hex digits, optionally followed by
 * one newline */
const char *gw_replica_init(const char *state_dir);
/* this replica's id (after gw_replica_init succeeded; "" before) */
const char *gw_replica_id(void);

#endif
