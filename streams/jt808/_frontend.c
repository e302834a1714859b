/* The JT/T 808 gateway's native front end (streams/jt808/native.py drives it; docs/performance.md).
 *
 * One epoll loop in its own thread, without the GIL, owns the sockets the gateway hands it. Per read it
 * does what ``_Conn.data_received`` does in Python: frame splitting (with the same size limits), the
 * per-connection frame budget, and for an authenticated connection the strict 0x0200 location report
 * (``fastpath.location``) and the 0x0002 heartbeat: it writes the 0x8001 answer itself (the connection's own
 * serial numbering) and appends the position to a batch. Every other frame (any other message, anything it
 * does not fully understand, a frame of an unauthenticated connection) is passed up with the connection id
 * and the connection waits — nothing more of it is read or answered — until Python has handled that frame
 * and resumed it with its answer, its serial counter and its identity (``resume``). So replies keep their
 * order and numbering and Python decides everything it decides today.
 *
 * Python drains the batch and the events (frames passed up, closes) when the eventfd ``fileno()`` becomes
 * readable. All state is guarded by one mutex; the loop thread never touches a Python object (the rows'
 * (plate, colour, driver) tuples are referenced by pointer and kept alive in a graveyard until a drain).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define HIGH_WATER 65536         /* uvloop's default write high-water mark: above it pause_writing() fires */
#define MAX_EVENTS 512

enum { ST_OPEN = 1, ST_SUSPENDED = 2, ST_CLOSING = 3 };
enum { EV_UP = 1, EV_LOST = 2, EV_CLOSED = 3 };
enum { R_DONE = 0, R_UP = 1 };

typedef struct {
    uint64_t cid;
    int fd;
    int state;
    unsigned char *in;
    size_t inlen, incap;
    unsigned char *out;
    size_t outlen, outcap;
    uint32_t mask;              /* registered epoll events (0 = not in the epoll set) */
    double tokens, t_tok, last_rx;
    unsigned serial;
    char key[48];
    int keylen;                 /* 0: not authenticated, every frame goes up */
    PyObject *info;             /* (plate, colour, driver) — owned; released through the graveyard */
    int64_t recv_ms;            /* wall-clock ms of the read being handled */
} Conn;

typedef struct {
    PyObject *info;
    int64_t ts, recv;
    double lat, lon, speed, alt, mileage;
    uint32_t alarm, status;
    int heading, version, has_mileage, ndigits;
    char digits[20];
} Row;

typedef struct {
    size_t pos;                 /* rows before it (events are handled in order with the rows) */
    int kind;
    uint64_t cid;
    unsigned serial;
    unsigned char *data;
    size_t len;
    const char *reason;
    int reject;
} Event;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_t thread;
    int thread_started;
    int running;
    int ep, ctl_fd, note_fd;
    int notified;
    Conn **slots;
    size_t nslots;
    uint32_t gen;
    size_t nconns;
    Row *rows;
    size_t nrows, caprows;
    Event *events;
    size_t nevents, capevents;
    PyObject **grave;
    size_t ngrave, capgrave;
    double rate, coalesce_s;
    size_t max_frame;
    long room;
    size_t note_rows;           /* positions that wake Python at once (else it drains them at its tick) */
    double first_row_t;         /* monotonic arrival of the oldest undrained position */
    int paused;
    unsigned long long locations, heartbeats;
    unsigned char *tmp;         /* unescape buffer (max_frame bytes) */
    unsigned char *rbuf;        /* read buffer (READ_CHUNK bytes) */
} Frontend;

/* --- small helpers ---------------------------------------------------------------------------------- */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void) {
    /* int(time.time() * 1000), as the Python gateway computes recv_ts */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    return (int64_t)(t * 1000);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static void note(Frontend *fe) {          /* wake Python (once until it drains) */
    if (!fe->notified) {
        uint64_t one = 1;
        ssize_t r = write(fe->note_fd, &one, 8);
        (void)r;
        fe->notified = 1;
    }
}

static void poke(Frontend *fe) {          /* wake the loop thread */
    uint64_t one = 1;
    ssize_t r = write(fe->ctl_fd, &one, 8);
    (void)r;
}

static void bury(Frontend *fe, PyObject *o) {
    if (o == NULL)
        return;
    if (grow((void **)&fe->grave, &fe->capgrave, fe->ngrave + 1, sizeof(PyObject *)) == 0)
        fe->grave[fe->ngrave++] = o;
    /* out of memory: leak the reference rather than free it without the GIL */
}

static Event *push_event(Frontend *fe, int kind, Conn *c) {
    if (grow((void **)&fe->events, &fe->capevents, fe->nevents + 1, sizeof(Event)) < 0)
        return NULL;
    Event *e = &fe->events[fe->nevents++];
    memset(e, 0, sizeof *e);
    e->pos = fe->nrows;
    e->kind = kind;
    e->cid = c->cid;
    e->serial = c->serial;
    note(fe);
    return e;
}

static Conn *lookup(Frontend *fe, uint64_t cid) {
    size_t fd = (size_t)(cid & 0xffffffffu);
    if (fd >= fe->nslots || fe->slots[fd] == NULL || fe->slots[fd]->cid != cid)
        return NULL;
    return fe->slots[fd];
}

static void set_interest(Frontend *fe, Conn *c) {
    uint32_t want = 0;
    if (c->state == ST_OPEN)
        want |= EPOLLIN;
    if (c->outlen)
        want |= EPOLLOUT;
    if (want == c->mask)
        return;
    struct epoll_event ev;
    ev.events = want;
    ev.data.u64 = c->cid;
    if (want == 0) {
        epoll_ctl(fe->ep, EPOLL_CTL_DEL, c->fd, &ev);
    } else if (c->mask == 0) {
        epoll_ctl(fe->ep, EPOLL_CTL_ADD, c->fd, &ev);
    } else {
        epoll_ctl(fe->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    c->mask = want;
}

/* Close the socket now and tell Python (connection_lost). */
static void drop(Frontend *fe, Conn *c) {
    if (c->mask) {
        struct epoll_event ev = {0};
        epoll_ctl(fe->ep, EPOLL_CTL_DEL, c->fd, &ev);
    }
    close(c->fd);
    push_event(fe, EV_LOST, c);
    bury(fe, c->info);
    fe->slots[c->fd] = NULL;
    fe->nconns--;
    free(c->in);
    free(c->out);
    free(c);
}

static int append_out(Conn *c, const unsigned char *b, size_t n) {
    if (grow((void **)&c->out, &c->outcap, c->outlen + n, 1) < 0)
        return -1;
    memcpy(c->out + c->outlen, b, n);
    c->outlen += n;
    return 0;
}

/* Closing gracefully: nothing more is read; the queued answers go out, then the socket closes. */
static void start_closing(Frontend *fe, Conn *c) {
    c->state = ST_CLOSING;
    c->inlen = 0;
}

/* Write what is queued. Returns 0, or -1 when the connection was dropped. */
static int flush_out(Frontend *fe, Conn *c) {
    while (c->outlen) {
        ssize_t n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            drop(fe, c);
            return -1;
        }
        memmove(c->out, c->out + n, c->outlen - (size_t)n);
        c->outlen -= (size_t)n;
    }
    if (c->outlen > HIGH_WATER && c->state != ST_CLOSING) {
        /* the terminal does not read its replies: _Conn.pause_writing → close("write_backlog") */
        Event *e = push_event(fe, EV_CLOSED, c);
        if (e) {
            e->reason = "write_backlog";
            e->reject = 0;
        }
        start_closing(fe, c);
    }
    if (c->state == ST_CLOSING && c->outlen == 0) {
        drop(fe, c);
        return -1;
    }
    set_interest(fe, c);
    return 0;
}

/* --- one frame ------------------------------------------------------------------------------------------- */

static const unsigned char DIM[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

static int bcd(unsigned char b) {      /* fastpath._BCD: 99 for a byte with a nibble above 9 */
    return ((b >> 4) < 10 && (b & 15) < 10) ? (b >> 4) * 10 + (b & 15) : 99;
}

static int64_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void put_escaped(unsigned char *dst, size_t *n, unsigned char b) {
    if (b == 0x7e) {
        dst[(*n)++] = 0x7d;
        dst[(*n)++] = 0x02;
    } else if (b == 0x7d) {
        dst[(*n)++] = 0x7d;
        dst[(*n)++] = 0x01;
    } else {
        dst[(*n)++] = b;
    }
}

/* The 0x8001 general answer to the frame whose unescaped header is ``raw`` (hlen bytes), result 0. The
 * bytes ``fastpath.ack`` (and ``codec.build_frame``) produce. */
static int queue_ack(Conn *c, const unsigned char *raw, int hlen, unsigned msg_id, unsigned msg_serial) {
    unsigned char r[32];
    int n = 0;
    r[n++] = 0x80;
    r[n++] = 0x01;
    if (hlen == 17) {
        r[n++] = 0x40;
        r[n++] = 0x05;
        r[n++] = raw[4] ? raw[4] : 1;
        memcpy(r + n, raw + 5, 10);
        n += 10;
    } else {
        r[n++] = 0x00;
        r[n++] = 0x05;
        memcpy(r + n, raw + 4, 6);
        n += 6;
    }
    c->serial = (c->serial + 1) & 0xffff;
    r[n++] = (unsigned char)(c->serial >> 8);
    r[n++] = (unsigned char)c->serial;
    r[n++] = (unsigned char)(msg_serial >> 8);
    r[n++] = (unsigned char)msg_serial;
    r[n++] = (unsigned char)(msg_id >> 8);
    r[n++] = (unsigned char)msg_id;
    r[n++] = 0;                          /* result OK */
    unsigned char x = 0;
    for (int i = 0; i < n; i++)
        x ^= r[i];
    r[n++] = x;
    unsigned char e[80];
    size_t m = 0;
    e[m++] = 0x7e;
    for (int i = 0; i < n; i++)
        put_escaped(e, &m, r[i]);
    e[m++] = 0x7e;
    return append_out(c, e, m);
}

/* One frame (delimiters included) of an authenticated connection: R_DONE when answered here, R_UP when
 * Python must handle it. Accepts a subset of what ``fastpath.location`` (0x0200) and the codec (0x0002)
 * accept, with the identity check of ``_Conn.data_received`` / ``Gateway.on_frame``. */
static int handle_frame(Frontend *fe, Conn *c, const unsigned char *f, size_t flen) {
    if (c->keylen == 0 || flen < 15)
        return R_UP;
    const unsigned char *src = f + 1;
    size_t slen = flen - 2, n = 0;
    unsigned char *raw = fe->tmp;
    if (slen > fe->max_frame)
        return R_UP;
    for (size_t i = 0; i < slen; i++) {
        unsigned char b = src[i];
        if (b == 0x7d) {
            if (i + 1 >= slen)
                return R_UP;
            unsigned char nx = src[++i];
            if (nx == 0x01)
                b = 0x7d;
            else if (nx == 0x02)
                b = 0x7e;
            else
                return R_UP;
        }
        raw[n++] = b;
    }
    if (n < 13)
        return R_UP;
    unsigned msg_id = ((unsigned)raw[0] << 8) | raw[1];
    if (msg_id != 0x0200 && msg_id != 0x0002)
        return R_UP;
    unsigned props = ((unsigned)raw[2] << 8) | raw[3];
    if (props & 0x3C00)
        return R_UP;
    int hlen, toff, tlen;
    if (props & 0x4000) {
        hlen = 17, toff = 5, tlen = 10;
    } else {
        hlen = 12, toff = 4, tlen = 6;
    }
    long end = (long)n - 1;
    long body_len = end - hlen;
    if (body_len < 0 || body_len != (long)(props & 0x3FF))
        return R_UP;
    unsigned char x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= raw[i];
    if (x)
        return R_UP;
    char digits[20];
    for (int i = 0; i < tlen; i++) {
        unsigned char b = raw[toff + i];
        if ((b >> 4) > 9 || (b & 15) > 9)
            return R_UP;
        digits[2 * i] = (char)('0' + (b >> 4));
        digits[2 * i + 1] = (char)('0' + (b & 15));
    }
    int nd = 2 * tlen, z = 0;
    while (z < nd && digits[z] == '0')
        z++;
    const char *k = digits + z;
    int kl = nd - z;
    if (kl == 0) {
        k = "0";
        kl = 1;
    }
    if (kl != c->keylen || memcmp(k, c->key, (size_t)kl) != 0)
        return R_UP;
    unsigned msg_serial = ((unsigned)raw[hlen - 2] << 8) | raw[hlen - 1];
    if (msg_id == 0x0200) {
        if (body_len < 28)
            return R_UP;
        const unsigned char *b = raw + hlen;
        const unsigned char *t = b + 22;
        for (int i = 0; i < 3; i++)
            if ((t[i] >> 4) > 9 || (t[i] & 15) > 9)
                return R_UP;
        int yy = bcd(t[0]), mm = bcd(t[1]), dd = bcd(t[2]);
        int year = 2000 + yy;
        int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        if (mm < 1 || mm > 12 || dd < 1 || dd > DIM[mm] + (mm == 2 && leap))
            return R_UP;
        int hh = bcd(t[3]), mi = bcd(t[4]), ss = bcd(t[5]);
        if (hh > 23 || mi > 59 || ss > 59)
            return R_UP;
        if (grow((void **)&fe->rows, &fe->caprows, fe->nrows + 1, sizeof(Row)) < 0)
            return R_UP;
        Row *r = &fe->rows[fe->nrows];
        if (fe->nrows == 0)
            fe->first_row_t = c->last_rx;
        r->alarm = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
        r->status = ((uint32_t)b[4] << 24) | ((uint32_t)b[5] << 16) | ((uint32_t)b[6] << 8) | b[7];
        uint32_t lat = ((uint32_t)b[8] << 24) | ((uint32_t)b[9] << 16) | ((uint32_t)b[10] << 8) | b[11];
        uint32_t lon = ((uint32_t)b[12] << 24) | ((uint32_t)b[13] << 16) | ((uint32_t)b[14] << 8) | b[15];
        int16_t alt = (int16_t)(((unsigned)b[16] << 8) | b[17]);
        unsigned speed = ((unsigned)b[18] << 8) | b[19];
        r->heading = (int)(((unsigned)b[20] << 8) | b[21]);
        r->has_mileage = 0;
        r->mileage = 0;
        long pos = hlen + 28;
        while (end - pos >= 2) {        /* the codec's extras walk, keeping only mileage (0x01) */
            unsigned xid = raw[pos], xlen = raw[pos + 1];
            pos += 2;
            if ((long)xlen > end - pos)
                break;
            if (xid == 0x01 && xlen == 4) {
                uint32_t m = ((uint32_t)raw[pos] << 24) | ((uint32_t)raw[pos + 1] << 16) |
                             ((uint32_t)raw[pos + 2] << 8) | raw[pos + 3];
                r->mileage = (double)m / 10;
                r->has_mileage = 1;
            }
            pos += xlen;
        }
        r->lat = (double)lat / 1e6;
        r->lon = (double)lon / 1e6;
        if (r->status & 0x04)            /* STATUS_SOUTH */
            r->lat = -r->lat;
        if (r->status & 0x08)            /* STATUS_WEST */
            r->lon = -r->lon;
        int64_t day = (days_from_civil(year, mm, dd) * 86400 - 8 * 3600) * 1000;    /* 00:00 Beijing */
        r->ts = day + (int64_t)((hh * 60 + mi) * 60 + ss) * 1000;
        r->speed = (double)speed / 10;
        r->alt = (double)alt;
        r->recv = c->recv_ms;
        r->version = hlen == 17 ? 2019 : 2013;
        memcpy(r->digits, digits, (size_t)nd);
        r->ndigits = nd;
        r->info = c->info;
        if (queue_ack(c, raw, hlen, msg_id, msg_serial) < 0)
            return R_UP;
        fe->nrows++;
        fe->locations++;
        return R_DONE;
    }
    if (queue_ack(c, raw, hlen, msg_id, msg_serial) < 0)
        return R_UP;
    fe->heartbeats++;
    return R_DONE;
}

/* The next frame of buf[*pos, n): 1 with ``*start``, ``*end`` at its two 0x7e and ``*pos`` past it; 0 when
 * no frame is complete (``*pos``: where the unterminated tail starts, or n). "7e 7e" ends nothing: the
 * second 0x7e starts the next frame. The one scan of ``run_frames`` and ``check_split``. */
static int next_frame(const unsigned char *buf, size_t n, size_t *pos, size_t *start, size_t *end) {
    for (;;) {
        const unsigned char *s = *pos < n ? memchr(buf + *pos, 0x7e, n - *pos) : NULL;
        if (!s) {
            *pos = n;
            return 0;
        }
        size_t a = (size_t)(s - buf);
        const unsigned char *e = a + 1 < n ? memchr(buf + a + 1, 0x7e, n - a - 1) : NULL;
        if (!e) {
            *pos = a;
            return 0;
        }
        size_t b = (size_t)(e - buf);
        if (b == a + 1) {
            *pos = b;
            continue;
        }
        *start = a;
        *end = b;
        *pos = b + 1;
        return 1;
    }
}

/* Frames of ``c`` from the start of its input: handled here, or passed up (the connection then waits). */
static void run_frames(Frontend *fe, Conn *c) {
    size_t pos = 0, n = c->inlen, start, end;
    unsigned char *buf = c->in;
    if (n == 0)
        return;
    while (c->state == ST_OPEN) {
        if (!next_frame(buf, n, &pos, &start, &end))
            break;
        if (c->tokens < 1) {
            Event *ev = push_event(fe, EV_CLOSED, c);
            if (ev) {
                ev->reason = "rate_limit";
                ev->reject = 1;
            }
            start_closing(fe, c);
            return;
        }
        c->tokens -= 1;
        if (handle_frame(fe, c, buf + start, end - start + 1) == R_UP) {
            Event *ev = push_event(fe, EV_UP, c);
            if (!ev || !(ev->data = malloc(end - start + 1))) {
                if (ev)
                    fe->nevents--;
                start_closing(fe, c);            /* out of memory: nothing sane left to do */
                return;
            }
            memcpy(ev->data, buf + start, end - start + 1);
            ev->len = end - start + 1;
            c->state = ST_SUSPENDED;
            break;
        }
    }
    if (c->state == ST_CLOSING)
        return;
    memmove(buf, buf + pos, n - pos);
    c->inlen = n - pos;
}

/* The read's checks of ``split_frames``: a frame or an unterminated tail above max_frame closes. Returns
 * whether a complete frame is present (the frame budget is refilled only then, as in Python). */
static int check_split(Frontend *fe, Conn *c, int *too_large) {
    size_t pos = 0, n = c->inlen, start, end;
    int any = 0;
    *too_large = 0;
    while (next_frame(c->in, n, &pos, &start, &end)) {
        if (end - start + 1 > fe->max_frame) {
            *too_large = 1;
            return any;
        }
        any = 1;
    }
    if (n - pos > fe->max_frame)
        *too_large = 1;
    return any;
}

static void on_readable(Frontend *fe, Conn *c) {
    ssize_t r;
    do {                                  /* into the loop's buffer: a connection keeps only its unfinished tail */
        r = recv(c->fd, fe->rbuf, READ_CHUNK, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (r <= 0) {                         /* end of stream or error: connection_lost */
        drop(fe, c);
        return;
    }
    if (grow((void **)&c->in, &c->incap, c->inlen + (size_t)r, 1) < 0) {
        drop(fe, c);
        return;
    }
    memcpy(c->in + c->inlen, fe->rbuf, (size_t)r);
    c->inlen += (size_t)r;
    double now = mono();
    c->last_rx = now;
    int too_large;
    int any = check_split(fe, c, &too_large);
    if (too_large) {
        Event *ev = push_event(fe, EV_CLOSED, c);
        if (ev) {
            ev->reason = "frame_too_large";
            ev->reject = 1;
        }
        start_closing(fe, c);
        flush_out(fe, c);
        return;
    }
    if (!any)
        return;
    double t = c->tokens + (now - c->t_tok) * fe->rate;
    c->tokens = t < fe->rate ? t : fe->rate;
    c->t_tok = now;
    c->recv_ms = wall_ms();
    run_frames(fe, c);
    if (c->state == ST_OPEN && c->inlen == 0 && c->incap > 4096) {
        free(c->in);                      /* a large read is over: give its buffer back */
        c->in = NULL;
        c->incap = 0;
    }
    flush_out(fe, c);
}

static int reads_stopped(Frontend *fe) {
    return fe->paused || (long)fe->nrows >= fe->room;
}

static void *loop_main(void *arg) {
    Frontend *fe = (Frontend *)arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        pthread_mutex_lock(&fe->mu);
        int running = fe->running, stopped = reads_stopped(fe);
        pthread_mutex_unlock(&fe->mu);
        if (!running)
            break;
        if (stopped) {                     /* back-pressure: only Python can end it (pause / room / stop) */
            struct pollfd p = {fe->ctl_fd, POLLIN, 0};
            poll(&p, 1, 1000);
            uint64_t v;
            ssize_t rr = read(fe->ctl_fd, &v, 8);
            (void)rr;
            continue;
        }
        int n = epoll_wait(fe->ep, evs, MAX_EVENTS, 1000);
        if (n <= 0)
            continue;
        double t0 = mono();
        int io = 0;
        pthread_mutex_lock(&fe->mu);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) {
                uint64_t v;
                ssize_t rr = read(fe->ctl_fd, &v, 8);
                (void)rr;
                continue;
            }
            Conn *c = lookup(fe, evs[i].data.u64);
            if (!c)
                continue;
            io = 1;
            uint32_t ev = evs[i].events;
            if ((ev & EPOLLOUT) && c->outlen) {
                if (flush_out(fe, c) < 0)
                    continue;
            }
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (c->state == ST_OPEN) {
                    if (reads_stopped(fe))
                        continue;          /* level-triggered: read once reads resume */
                    on_readable(fe, c);
                } else if (ev & (EPOLLHUP | EPOLLERR)) {
                    if (c->outlen == 0 || (ev & EPOLLERR))
                        set_interest(fe, c);     /* nothing wanted: out of the set until resumed */
                }
            }
        }
        if (fe->nevents || fe->nrows >= fe->note_rows || reads_stopped(fe))
            note(fe);
        int go = fe->running;
        pthread_mutex_unlock(&fe->mu);
        if (io && go && fe->coalesce_s > 0) {
            /* the Python gateway's nap: the reads arriving meanwhile share the next wake-up */
            double wait = t0 + fe->coalesce_s - mono();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    return NULL;
}

/* --- Python API -------------------------------------------------------------------------------------- */

static void lock(Frontend *fe) {
    if (pthread_mutex_trylock(&fe->mu) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&fe->mu);
        Py_END_ALLOW_THREADS
    }
}

static void unlock(Frontend *fe) {
    pthread_mutex_unlock(&fe->mu);
}

static int Frontend_init(Frontend *fe, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"rate", "max_frame", "coalesce_s", "room", "note_rows", NULL};
    double rate, coalesce;
    Py_ssize_t max_frame, note_rows;
    long room;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dndln", kwlist, &rate, &max_frame, &coalesce, &room, &note_rows))
        return -1;
    fe->note_rows = note_rows < 1 ? 1 : (size_t)note_rows;
    if (max_frame < 16 || fe->ep) {
        PyErr_SetString(PyExc_ValueError, "bad max_frame, or already initialised");
        return -1;
    }
    fe->rate = rate;
    fe->max_frame = (size_t)max_frame;
    fe->coalesce_s = coalesce;
    fe->room = room;
    fe->tmp = malloc((size_t)max_frame);
    fe->rbuf = malloc(READ_CHUNK);
    pthread_mutex_init(&fe->mu, NULL);
    fe->ep = epoll_create1(EPOLL_CLOEXEC);
    fe->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    fe->note_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fe->ep < 0 || fe->ctl_fd < 0 || fe->note_fd < 0 || !fe->tmp || !fe->rbuf) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    epoll_ctl(fe->ep, EPOLL_CTL_ADD, fe->ctl_fd, &ev);
    fe->running = 1;
    if (pthread_create(&fe->thread, NULL, loop_main, fe) != 0) {
        fe->running = 0;
        PyErr_SetString(PyExc_OSError, "cannot start the front end's thread");
        return -1;
    }
    fe->thread_started = 1;
    return 0;
}

static void free_all(Frontend *fe) {
    /* GIL held, thread stopped */
    for (size_t i = 0; i < fe->nslots; i++) {
        Conn *c = fe->slots[i];
        if (c) {
            close(c->fd);
            Py_XDECREF(c->info);
            free(c->in);
            free(c->out);
            free(c);
            fe->slots[i] = NULL;
        }
    }
    fe->nconns = 0;
    for (size_t i = 0; i < fe->nevents; i++)
        free(fe->events[i].data);
    fe->nevents = 0;
    fe->nrows = 0;
    for (size_t i = 0; i < fe->ngrave; i++)
        Py_DECREF(fe->grave[i]);
    fe->ngrave = 0;
}

static void join_thread(Frontend *fe) {
    if (!fe->thread_started)
        return;
    pthread_mutex_lock(&fe->mu);
    fe->running = 0;
    pthread_mutex_unlock(&fe->mu);
    poke(fe);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(fe->thread, NULL);
    Py_END_ALLOW_THREADS
    fe->thread_started = 0;
}

static void Frontend_dealloc(Frontend *fe) {
    join_thread(fe);
    free_all(fe);
    if (fe->ep > 0)
        close(fe->ep);
    if (fe->ctl_fd > 0)
        close(fe->ctl_fd);
    if (fe->note_fd > 0)
        close(fe->note_fd);
    free(fe->slots);
    free(fe->rows);
    free(fe->events);
    free(fe->grave);
    free(fe->tmp);
    free(fe->rbuf);
    Py_TYPE(fe)->tp_free((PyObject *)fe);
}

/* stop(): the loop thread ends (nothing more is read or answered); what it left can still be drained. */
static PyObject *Frontend_stop(Frontend *fe, PyObject *noargs) {
    join_thread(fe);
    Py_RETURN_NONE;
}

/* release(): after stop() and the last drain, every socket still held is closed. */
static PyObject *Frontend_release(Frontend *fe, PyObject *noargs) {
    join_thread(fe);
    free_all(fe);
    Py_RETURN_NONE;
}

static PyObject *Frontend_fileno(Frontend *fe, PyObject *noargs) {
    return PyLong_FromLong(fe->note_fd);
}

/* add(fd) → connection id. The gateway hands over a connected socket (it no longer owns the descriptor). */
static PyObject *Frontend_add(Frontend *fe, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    if (!fe->thread_started) {
        PyErr_SetString(PyExc_RuntimeError, "front end stopped");
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Conn *c = calloc(1, sizeof(Conn));
    if (!c)
        return PyErr_NoMemory();
    lock(fe);
    if ((size_t)fd >= fe->nslots) {
        size_t n = fe->nslots ? fe->nslots : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        Conn **s = realloc(fe->slots, n * sizeof(Conn *));
        if (!s) {
            unlock(fe);
            free(c);
            return PyErr_NoMemory();
        }
        memset(s + fe->nslots, 0, (n - fe->nslots) * sizeof(Conn *));
        fe->slots = s;
        fe->nslots = n;
    }
    if (fe->slots[fd]) {
        unlock(fe);
        free(c);
        PyErr_SetString(PyExc_RuntimeError, "descriptor already held by the front end");
        return NULL;
    }
    fe->gen++;
    if (fe->gen == 0)
        fe->gen = 1;
    c->cid = ((uint64_t)fe->gen << 32) | (uint32_t)fd;
    c->fd = fd;
    c->state = ST_OPEN;
    c->tokens = fe->rate;
    c->t_tok = c->last_rx = mono();
    fe->slots[fd] = c;
    fe->nconns++;
    set_interest(fe, c);
    uint64_t cid = c->cid;
    unlock(fe);
    return PyLong_FromUnsignedLongLong(cid);
}

/* resume(cid, serial, out, key, info, close): Python handled the frame passed up. ``out`` is its answer,
 * ``serial`` the connection's serial counter after it, ``key`` the authenticated terminal key (None: not
 * authenticated), ``info`` (plate, colour, driver) for the rows, ``close`` whether the connection closes
 * after the answer. The waiting frames are then handled (in this thread). */
static PyObject *Frontend_resume(Frontend *fe, PyObject *args) {
    unsigned long long cid;
    unsigned serial;
    Py_buffer out;
    PyObject *key, *info;
    int closing;
    if (!PyArg_ParseTuple(args, "KIy*OOp", &cid, &serial, &out, &key, &info, &closing))
        return NULL;
    const char *k = NULL;
    Py_ssize_t kl = 0;
    if (key != Py_None) {
        k = PyUnicode_AsUTF8AndSize(key, &kl);
        if (!k || kl >= 48) {
            PyBuffer_Release(&out);
            if (k)
                PyErr_SetString(PyExc_ValueError, "terminal key too long");
            return NULL;
        }
    }
    lock(fe);
    Conn *c = lookup(fe, cid);
    if (c && c->state == ST_SUSPENDED) {
        c->serial = serial & 0xffff;
        c->keylen = (int)kl;
        if (kl)
            memcpy(c->key, k, (size_t)kl);
        if (info != c->info) {
            bury(fe, c->info);
            Py_XINCREF(info == Py_None ? NULL : info);
            c->info = info == Py_None ? NULL : info;
        }
        if (c->info == NULL)
            c->keylen = 0;                  /* no vehicle: nothing can be a position here */
        append_out(c, out.buf, (size_t)out.len);
        if (closing) {
            start_closing(fe, c);
        } else {
            c->state = ST_OPEN;
            run_frames(fe, c);
        }
        flush_out(fe, c);
        if (fe->nevents || fe->nrows >= fe->note_rows || reads_stopped(fe))
            note(fe);
    }
    unlock(fe);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyObject *Frontend_send(Frontend *fe, PyObject *args) {
    unsigned long long cid;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "Ky*", &cid, &out))
        return NULL;
    lock(fe);
    Conn *c = lookup(fe, cid);
    if (c && c->state != ST_CLOSING) {
        append_out(c, out.buf, (size_t)out.len);
        flush_out(fe, c);
    }
    unlock(fe);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* close(cid, abort): abort closes now; otherwise queued answers go out first. A lost event follows. */
static PyObject *Frontend_close(Frontend *fe, PyObject *args) {
    unsigned long long cid;
    int abort_;
    if (!PyArg_ParseTuple(args, "Kp", &cid, &abort_))
        return NULL;
    lock(fe);
    Conn *c = lookup(fe, cid);
    if (c) {
        if (abort_) {
            drop(fe, c);
        } else if (c->state != ST_CLOSING) {
            start_closing(fe, c);
            flush_out(fe, c);
        }
    }
    unlock(fe);
    Py_RETURN_NONE;
}

static PyObject *Frontend_pause(Frontend *fe, PyObject *args) {
    int p;
    if (!PyArg_ParseTuple(args, "p", &p))
        return NULL;
    lock(fe);
    fe->paused = p;
    unlock(fe);
    poke(fe);
    Py_RETURN_NONE;
}

static PyObject *Frontend_set_room(Frontend *fe, PyObject *args) {
    long room;
    if (!PyArg_ParseTuple(args, "l", &room))
        return NULL;
    lock(fe);
    int was = reads_stopped(fe);
    fe->room = room;
    int now = reads_stopped(fe);
    unlock(fe);
    if (was != now)
        poke(fe);
    Py_RETURN_NONE;
}

/* idle(limit) → ids of the connections whose last read was before ``limit`` (time.monotonic()). */
static PyObject *Frontend_idle(Frontend *fe, PyObject *args) {
    double limit;
    if (!PyArg_ParseTuple(args, "d", &limit))
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    lock(fe);
    for (size_t i = 0; i < fe->nslots; i++) {
        Conn *c = fe->slots[i];
        if (c && c->last_rx < limit) {
            PyObject *v = PyLong_FromUnsignedLongLong(c->cid);
            if (!v || PyList_Append(out, v) < 0) {
                Py_XDECREF(v);
                unlock(fe);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(v);
        }
    }
    unlock(fe);
    return out;
}

static PyObject *row_tuple(Row *r) {
    PyObject *info = r->info;
    PyObject *t = PyTuple_New(16);
    if (!t)
        return NULL;
    PyObject *plate = PyTuple_GET_ITEM(info, 0), *color = PyTuple_GET_ITEM(info, 1),
             *driver = PyTuple_GET_ITEM(info, 2);
    Py_INCREF(plate);
    Py_INCREF(color);
    Py_INCREF(driver);
    PyObject *mileage;
    if (r->has_mileage) {
        mileage = PyFloat_FromDouble(r->mileage);
    } else {
        mileage = Py_None;
        Py_INCREF(mileage);
    }
    PyTuple_SET_ITEM(t, 0, plate);
    PyTuple_SET_ITEM(t, 1, PyUnicode_FromStringAndSize(r->digits, r->ndigits));
    PyTuple_SET_ITEM(t, 2, PyLong_FromLongLong(r->ts));
    PyTuple_SET_ITEM(t, 3, PyFloat_FromDouble(r->lat));
    PyTuple_SET_ITEM(t, 4, PyFloat_FromDouble(r->lon));
    PyTuple_SET_ITEM(t, 5, PyFloat_FromDouble(r->speed));
    PyTuple_SET_ITEM(t, 6, PyLong_FromLong(r->heading));
    PyTuple_SET_ITEM(t, 7, PyFloat_FromDouble(r->alt));
    PyTuple_SET_ITEM(t, 8, color);
    PyTuple_SET_ITEM(t, 9, PyLong_FromUnsignedLong(r->alarm));
    PyTuple_SET_ITEM(t, 10, PyLong_FromUnsignedLong(r->status));
    PyTuple_SET_ITEM(t, 11, PyLong_FromLong(0));
    PyTuple_SET_ITEM(t, 12, driver);
    PyTuple_SET_ITEM(t, 13, mileage);
    PyTuple_SET_ITEM(t, 14, PyLong_FromLongLong(r->recv));
    PyTuple_SET_ITEM(t, 15, PyLong_FromLong(r->version));
    for (int i = 0; i < 16; i++) {
        if (PyTuple_GET_ITEM(t, i) == NULL) {
            Py_DECREF(t);
            return NULL;
        }
    }
    return t;
}

/* drain() → (rows, events, locations, heartbeats, first): the positions (row tuples in ``ROW_FIELDS`` order) and
 * events since the last drain, in order: an event (pos, kind, cid, frame | reason, serial, reject) comes
 * after the first ``pos`` rows. Kinds: 1 frame passed up, 2 connection lost, 3 closed here (reason), 4 closed
 * here and counted as a reject (reason). ``first``: time.monotonic() when the oldest of the rows arrived. */
static PyObject *Frontend_drain(Frontend *fe, PyObject *noargs) {
    lock(fe);
    uint64_t v;
    ssize_t rr = read(fe->note_fd, &v, 8);
    (void)rr;
    fe->notified = 0;
    Row *rows = fe->rows;
    size_t nrows = fe->nrows;
    Event *events = fe->events;
    size_t nevents = fe->nevents;
    PyObject **grave = fe->grave;
    size_t ngrave = fe->ngrave;
    unsigned long long loc = fe->locations, hb = fe->heartbeats;
    double first = fe->first_row_t;
    int was = reads_stopped(fe);
    fe->rows = NULL;
    fe->nrows = fe->caprows = 0;
    fe->events = NULL;
    fe->nevents = fe->capevents = 0;
    fe->grave = NULL;
    fe->ngrave = fe->capgrave = 0;
    fe->locations = fe->heartbeats = 0;
    int now = reads_stopped(fe);
    unlock(fe);
    if (was != now)
        poke(fe);
    PyObject *rl = PyList_New((Py_ssize_t)nrows), *el = PyList_New((Py_ssize_t)nevents), *res = NULL;
    if (rl && el) {
        size_t i;
        for (i = 0; i < nrows; i++) {
            PyObject *t = row_tuple(&rows[i]);
            if (!t)
                break;
            PyList_SET_ITEM(rl, (Py_ssize_t)i, t);
        }
        for (size_t j = 0; i == nrows && j < nevents; j++) {
            Event *e = &events[j];
            PyObject *t;
            if (e->kind == EV_UP)
                t = Py_BuildValue("(nKy#In)", (Py_ssize_t)e->pos, (unsigned long long)e->cid, (char *)e->data,
                                  (Py_ssize_t)e->len, e->serial, (Py_ssize_t)EV_UP);
            else
                t = Py_BuildValue("(nKsIn)", (Py_ssize_t)e->pos, (unsigned long long)e->cid,
                                  e->reason ? e->reason : "", e->serial,
                                  (Py_ssize_t)(e->kind == EV_CLOSED ? (e->reject ? 4 : 3) : EV_LOST));
            if (!t) {
                i = 0;
                break;
            }
            PyList_SET_ITEM(el, (Py_ssize_t)j, t);
        }
        if (!PyErr_Occurred())
            res = Py_BuildValue("(OOKKd)", rl, el, loc, hb, first);
    }
    Py_XDECREF(rl);
    Py_XDECREF(el);
    for (size_t j = 0; j < nevents; j++)
        free(events[j].data);
    free(events);
    free(rows);
    for (size_t j = 0; j < ngrave; j++)
        Py_DECREF(grave[j]);
    free(grave);
    return res;
}

static PyObject *Frontend_count(Frontend *fe, PyObject *noargs) {
    lock(fe);
    size_t n = fe->nconns;
    unlock(fe);
    return PyLong_FromSize_t(n);
}

static PyMethodDef Frontend_methods[] = {
    {"add", (PyCFunction)Frontend_add, METH_VARARGS, "add(fd) -> connection id"},
    {"resume", (PyCFunction)Frontend_resume, METH_VARARGS, "resume(cid, serial, out, key, info, close)"},
    {"send", (PyCFunction)Frontend_send, METH_VARARGS, "send(cid, data)"},
    {"close", (PyCFunction)Frontend_close, METH_VARARGS, "close(cid, abort)"},
    {"pause", (PyCFunction)Frontend_pause, METH_VARARGS, "pause(flag): stop / resume reading every socket"},
    {"set_room", (PyCFunction)Frontend_set_room, METH_VARARGS, "set_room(n): positions that may wait undrained"},
    {"idle", (PyCFunction)Frontend_idle, METH_VARARGS, "idle(limit) -> ids read last before limit"},
    {"drain", (PyCFunction)Frontend_drain, METH_NOARGS, "drain() -> (rows, events, locations, heartbeats, first)"},
    {"fileno", (PyCFunction)Frontend_fileno, METH_NOARGS, "eventfd readable when there is something to drain"},
    {"count", (PyCFunction)Frontend_count, METH_NOARGS, "open connections"},
    {"stop", (PyCFunction)Frontend_stop, METH_NOARGS, "stop the loop thread"},
    {"release", (PyCFunction)Frontend_release, METH_NOARGS, "close every connection (after stop and drain)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FrontendType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "roadwatch.streams.jt808._frontend.Frontend",
    .tp_basicsize = sizeof(Frontend),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The gateway's native socket and frame loop (one thread, no GIL).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Frontend_init,
    .tp_dealloc = (destructor)Frontend_dealloc,
    .tp_methods = Frontend_methods,
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_frontend", "JT/T 808 gateway native front end", -1, NULL,
};

PyMODINIT_FUNC PyInit__frontend(void) {
    if (PyType_Ready(&FrontendType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    Py_INCREF(&FrontendType);
    if (PyModule_AddObject(m, "Frontend", (PyObject *)&FrontendType) < 0) {
        Py_DECREF(&FrontendType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
