/*
 * linger.h: closing a client connection after an early answer without losing that answer.
 *
 * When the gateway answers before it has read the whole request body (413 at the body limit, an upload the member
 * ended), the connection cannot be reused and h2o closes it once the answer is written. A client still sending
 * then has unread bytes in the gateway's socket, and closing such a socket sends a TCP reset, which can reach the
 * client before it read the answer: it sees "connection reset" instead of the 413 (h2o 2.2.5 lib/http1.c, "TODO use
 * lingering close"). gw_linger_close keeps the connection open past h2o's close: it sends FIN after the answer,
 * then reads and drops what the client still sends until it closes too, for at most GW_LINGER_MS, and closes. Past
 * GW_LINGER_BYTES it reads no more (the client, held by TCP, can still read the answer) until GW_LINGER_MS.
 */
#ifndef GW_LINGER_H
#define GW_LINGER_H

#include <h2o.h>

#define GW_LINGER_MS 5000           /* the longest a connection lingers after h2o closed it */
#define GW_LINGER_BYTES (16u << 20) /* the most bytes read (and dropped) from the client meanwhile */

/* when h2o closes `sock` (a client connection of `loop`), it lingers as above; at most once per socket; 0 on success,
 * -1 when it cannot (then h2o closes it as before) */
int gw_linger_close(h2o_loop_t *loop, h2o_socket_t *sock);
/* connections lingering now */
size_t gw_linger_count(void);

#endif
