/* dockyard.security._chainfast: the audit writer's inner loops in C, and the daemon's audit queue.
 *
 * The writer process (audit_writer.py) formats one JSON line per API request and chains it with SHA-256
 * (audit.py). In Python that is ~5 us of CPU per record, which on a small machine competes with the
 * daemon serving the requests; here it is a fraction of a microsecond. The functions are byte-for-byte
 * replacements of the Python reference loops (audit._chain_py, audit_writer._texts_py and _render_py),
 * which the unit tests compare them against; when this module is not built, those loops serve.
 *
 *   chain(bodies, head) -> (lines, head)
 *       line = f'{body},"prev":"{head}"}}'.encode(); head = sha256(line).hexdigest(), for each body.
 *   texts(records, fixed_of, offset) -> list[str]
 *       The JSON text of each record (see audit_writer.Record); fixed_of(shape) -> (fixed, done) gives a
 *       shape's fixed middle text and whether the record has the status tail.
 *   render(templates, data, pos, count, head, offset, dropped) -> (lines, head, pos)
 *       What the writer uses: up to count records packed in data from pos, rendered (templates[i] is
 *       fixed_of's (fixed, done) for shape i) and chained from head into one bytes object, each line
 *       followed by a newline; the first gets "dropped_before" when dropped > 0. No object per record.
 *   RecordBuffer, unpack(shapes, data) -> list[Record]
 *       The serving loop's audit queue: one add() per API request packs the record into bytes (the format
 *       audit_records.py documents); the writer unpacks them. References: audit_records.RecordBufferPy
 *       and audit_records._unpack_py.
 *
 * SHA-256 is OpenSSL's (what hashlib uses, SHA-NI where the CPU has it).
 * Nothing here releases the GIL, so the module's static state needs no lock.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <float.h>

/* OpenSSL's SHA256_Init/Update/Final are deprecated since 3.0 in favour of EVP, but they are the same
 * SHA-NI code without the provider dispatch: measured 0.34 us against 0.46 us (EVP, one fetched digest and
 * a reused context) for a 437-byte line. Where OpenSSL is built without them, EVP serves. */
#if !defined(CHAINFAST_EVP)
#define OPENSSL_SUPPRESS_DEPRECATED
#endif
#include <openssl/evp.h>
#include <openssl/sha.h>
#if defined(OPENSSL_NO_DEPRECATED_3_0) && !defined(CHAINFAST_EVP)
#define CHAINFAST_EVP
#endif

#ifdef CHAINFAST_EVP
static EVP_MD *sha256_md;
static EVP_MD_CTX *sha256_ctx;
#endif

/* The seconds text of the last record formatted ("%Y-%m-%dT%H:%M:%S" of gmtime): records come in time
 * order, so one gmtime/strftime serves every record of a second. */
static long long last_second;
static int have_second;
static char second_text[64];
static size_t second_len;

static const char HEX[] = "0123456789abcdef";

/* ---- chain ---------------------------------------------------------------------------------------- */

static int
sha256_hex(const char *data, size_t n, char hex[64])
{
    unsigned char digest[32];
#ifdef CHAINFAST_EVP
    if (!EVP_DigestInit_ex(sha256_ctx, sha256_md, NULL) || !EVP_DigestUpdate(sha256_ctx, data, n)
        || !EVP_DigestFinal_ex(sha256_ctx, digest, NULL)) {
#else
    SHA256_CTX ctx;
    if (!SHA256_Init(&ctx) || !SHA256_Update(&ctx, data, n) || !SHA256_Final(digest, &ctx)) {
#endif
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        return -1;
    }
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = HEX[digest[i] >> 4];
        hex[2 * i + 1] = HEX[digest[i] & 15];
    }
    return 0;
}

static PyObject *
chain(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    static const char PREV[] = ",\"prev\":\"";
    const Py_ssize_t prev_len = sizeof(PREV) - 1;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "chain() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *bodies = args[0], *head = args[1];
    if (!PyList_Check(bodies)) {
        PyErr_Format(PyExc_TypeError, "chain() argument 1 must be list, not %.200s", Py_TYPE(bodies)->tp_name);
        return NULL;
    }
    if (!PyUnicode_Check(head)) {
        PyErr_Format(PyExc_TypeError, "chain() argument 2 must be str, not %.200s", Py_TYPE(head)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(bodies);
    if (n == 0)
        return Py_BuildValue("([]O)", head);
    Py_ssize_t hl;
    const char *hp = PyUnicode_AsUTF8AndSize(head, &hl); /* owned by head; head is 64 hex digits after */
    if (hp == NULL)
        return NULL;
    char cur[64];
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *body = PyList_GET_ITEM(bodies, i); /* nothing below runs Python code: the list stays */
        if (!PyUnicode_Check(body)) {
            PyErr_Format(PyExc_TypeError, "chain() bodies must be str, not %.200s", Py_TYPE(body)->tp_name);
            goto error;
        }
        if (PyUnicode_READY(body) < 0)
            goto error;
        const char *bp;
        Py_ssize_t bl;
        PyObject *encoded = NULL;
        if (PyUnicode_IS_ASCII(body)) {
            bp = (const char *)PyUnicode_DATA(body);
            bl = PyUnicode_GET_LENGTH(body);
        } else { /* strict UTF-8 as str.encode(): a lone surrogate raises UnicodeEncodeError */
            encoded = PyUnicode_AsUTF8String(body);
            if (encoded == NULL)
                goto error;
            bp = PyBytes_AS_STRING(encoded);
            bl = PyBytes_GET_SIZE(encoded);
        }
        Py_ssize_t size = bl + prev_len + hl + 2;
        PyObject *line = PyBytes_FromStringAndSize(NULL, size);
        if (line == NULL) {
            Py_XDECREF(encoded);
            goto error;
        }
        char *p = PyBytes_AS_STRING(line);
        memcpy(p, bp, bl);
        p += bl;
        memcpy(p, PREV, prev_len);
        p += prev_len;
        memcpy(p, hp, hl);
        p += hl;
        p[0] = '"';
        p[1] = '}';
        Py_XDECREF(encoded);
        PyList_SET_ITEM(out, i, line);
        if (sha256_hex(PyBytes_AS_STRING(line), (size_t)size, cur) < 0)
            goto error;
        hp = cur;
        hl = 64;
    }
    PyObject *new_head = PyUnicode_FromStringAndSize(cur, 64);
    if (new_head == NULL)
        goto error;
    PyObject *result = PyTuple_Pack(2, out, new_head);
    Py_DECREF(out);
    Py_DECREF(new_head);
    return result;
error:
    Py_DECREF(out); /* unset items are NULL: list dealloc skips them */
    return NULL;
}

/* ---- texts ---------------------------------------------------------------------------------------- */

/* A number argument as a double: float or int only (what the daemon sends), as Python's arithmetic on
 * them would convert it. */
static int
as_double(PyObject *v, const char *what, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if (PyFloat_Check(v) || PyLong_Check(v)) {
        *out = PyFloat_AsDouble(v);
        return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be a float, not %.200s", what, Py_TYPE(v)->tp_name);
    return -1;
}

/* Decimal digits of v (no sign) written backwards ending at end; returns the start. */
static char *
digits_back(char *end, unsigned long long v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* '%d' % v, as Python formats it: an int's value, or int(v) of another number; ASCII text in *text.
 * small (>= 24 bytes) holds the digits of a value that fits in a long long; larger ones go to *keep. */
static int
format_int(PyObject *v, char *small, const char **text, Py_ssize_t *len, PyObject **keep)
{
    PyObject *num = NULL;
    if (!PyLong_Check(v)) {
        if (!PyNumber_Check(v))
            goto wrongtype;
        num = PyNumber_Long(v);
        if (num == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                goto wrongtype;
            }
            return -1;
        }
        v = num;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        Py_XDECREF(num);
        return -1;
    }
    if (overflow) {
        PyObject *s = PyNumber_ToBase(v, 10);
        Py_XDECREF(num);
        if (s == NULL)
            return -1;
        *keep = s;
        *text = (const char *)PyUnicode_DATA(s); /* decimal digits: ASCII */
        *len = PyUnicode_GET_LENGTH(s);
        return 0;
    }
    Py_XDECREF(num);
    char *end = small + 24;
    char *start = digits_back(end, x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x);
    if (x < 0)
        *--start = '-';
    *text = start;
    *len = end - start;
    return 0;
wrongtype:
    PyErr_Format(PyExc_TypeError, "%%d format: a real number is required, not %.200s", Py_TYPE(v)->tp_name);
    return -1;
}

/* '%.3f' % x for the common durations, in buf (returned); NULL when x needs the general formatter.
 * Python formats with correct rounding of x's exact binary value, ties to even. x * 1000 is exact in a
 * long double of 64 significand bits (53 + 7 significant bits of 1000), and so is its fraction: rounding
 * it is exact too. Saves PyOS_double_to_string's allocation and dtoa (~0.2 us per record). */
static const char *
format_ms(double x, char buf[32])
{
#if LDBL_MANT_DIG >= 64
    if (!(fabs(x) < 1e15)) /* also NaN */
        return NULL;
    long double y = (long double)fabs(x) * 1000.0L;
    unsigned long long q = (unsigned long long)y;
    long double frac = y - (long double)q;
    if (frac > 0.5L || (frac == 0.5L && (q & 1)))
        q++;
    char *end = buf + 31;
    *end = '\0';
    unsigned long long milli = q % 1000;
    for (int i = 0; i < 3; i++, milli /= 10)
        *--end = (char)('0' + milli % 10);
    *--end = '.';
    end = digits_back(end, q / 1000);
    if (signbit(x))
        *--end = '-';
    return end;
#else
    (void)x;
    (void)buf;
    return NULL;
#endif
}

/* The seconds text of whole (gmtime + strftime, as time.strftime(fmt, time.gmtime(whole))). */
static int
set_second(long long whole)
{
    time_t tt = (time_t)whole;
    struct tm tm;
    errno = 0;
    if (gmtime_r(&tt, &tm) == NULL) {
        if (errno == 0)
            errno = EINVAL;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    size_t n = strftime(second_text, sizeof(second_text), "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "time out of range");
        return -1;
    }
    second_len = n;
    last_second = whole;
    have_second = 1;
    return 0;
}

/* int(t) of a record's wall-clock time t, after time.strftime(..., time.gmtime(int(t))) would succeed on it
 * (second_text then holds that text): -1 with the exception Python raises otherwise. */
static int
time_second(double t, long long *whole)
{
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return -1;
    }
    if (isinf(t)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        return -1;
    }
    if (!(t > -9.2e18 && t < 9.2e18)) {
        PyErr_SetString(PyExc_OverflowError, "timestamp out of range for platform time_t");
        return -1;
    }
    *whole = (long long)t; /* int(t): toward zero */
    if ((!have_second || *whole != last_second) && set_second(*whole) < 0)
        return -1;
    return 0;
}

#define TIME_HEAD_MAX (sizeof(second_text) + 64)

/* A record's text up to its request id, {"time":"<seconds>.<usec>Z","request_id":", into head
 * (TIME_HEAD_MAX bytes); time_second(t, &whole) succeeded just before. Returns the length. */
static Py_ssize_t
time_head(double t, long long whole, char *head)
{
    long long usec = (long long)((t - (double)whole) * 1e6);
    Py_ssize_t hl = 9;
    memcpy(head, "{\"time\":\"", 9);
    memcpy(head + hl, second_text, second_len);
    hl += (Py_ssize_t)second_len;
    head[hl++] = '.';
    if (usec >= 0 && usec < 1000000) {
        for (int i = 5; i >= 0; i--, usec /= 10)
            head[hl + i] = (char)('0' + usec % 10);
        hl += 6;
    } else {
        hl += snprintf(head + hl, 32, "%06lld", usec);
    }
    memcpy(head + hl, "Z\",\"request_id\":\"", 17);
    return hl + 17;
}

typedef struct {
    PyObject *shape; /* strong references: fixed_of may run any code */
    PyObject *entry; /* fixed_of(shape): (fixed, done) */
    PyObject *fixed;
    int done;
} Shaped;

#define SHAPES 16 /* per call; records of one connection share a shape, a chunk has few of them */

static Shaped *
lookup(Shaped *cache, int *count, int *next, PyObject *fixed_of, PyObject *shape)
{
    for (int i = 0; i < *count; i++)
        if (cache[i].shape == shape)
            return &cache[i];
    PyObject *entry = PyObject_CallOneArg(fixed_of, shape);
    if (entry == NULL)
        return NULL;
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 0))) {
        PyErr_SetString(PyExc_TypeError, "fixed_of(shape) must return a (str, bool) tuple");
        Py_DECREF(entry);
        return NULL;
    }
    int done = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1));
    if (done < 0 || PyUnicode_READY(PyTuple_GET_ITEM(entry, 0)) < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    Shaped *slot;
    if (*count < SHAPES) {
        slot = &cache[(*count)++];
    } else { /* full: replace round robin */
        slot = &cache[*next];
        *next = (*next + 1) % SHAPES;
        Py_DECREF(slot->shape);
        Py_DECREF(slot->entry);
    }
    Py_INCREF(shape);
    slot->shape = shape;
    slot->entry = entry;
    slot->fixed = PyTuple_GET_ITEM(entry, 0);
    slot->done = done;
    return slot;
}

/* A piece of a record's text: ASCII bytes, or a str (request id, fixed text: possibly not ASCII). */
typedef struct {
    const char *ascii;
    Py_ssize_t len;
    PyObject *str;
} Piece;

/* Joins the pieces into one str: a copy into an ASCII string when all are ASCII (the common case). */
static PyObject *
join(Piece *pieces, int n)
{
    Py_ssize_t total = 0;
    int ascii = 1;
    for (int i = 0; i < n; i++) {
        if (pieces[i].str != NULL) {
            if (!PyUnicode_IS_ASCII(pieces[i].str))
                ascii = 0;
            total += PyUnicode_GET_LENGTH(pieces[i].str);
        } else {
            total += pieces[i].len;
        }
    }
    if (ascii) {
        PyObject *s = PyUnicode_New(total, 127);
        if (s == NULL)
            return NULL;
        char *p = (char *)PyUnicode_DATA(s);
        for (int i = 0; i < n; i++) {
            if (pieces[i].str != NULL) {
                Py_ssize_t l = PyUnicode_GET_LENGTH(pieces[i].str);
                memcpy(p, PyUnicode_DATA(pieces[i].str), l);
                p += l;
            } else {
                memcpy(p, pieces[i].ascii, pieces[i].len);
                p += pieces[i].len;
            }
        }
        return s;
    }
    PyObject *parts = PyList_New(n);
    if (parts == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *part = pieces[i].str;
        if (part != NULL)
            Py_INCREF(part);
        else if ((part = PyUnicode_FromStringAndSize(pieces[i].ascii, pieces[i].len)) == NULL) {
            Py_DECREF(parts);
            return NULL;
        }
        PyList_SET_ITEM(parts, i, part);
    }
    PyObject *empty = PyUnicode_FromStringAndSize(NULL, 0);
    PyObject *s = empty ? PyUnicode_Join(empty, parts) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(parts);
    return s;
}

/* One record's text; NULL with an exception set. */
static PyObject *
record_text(PyObject *rec, Shaped *cache, int *count, int *next, PyObject *fixed_of, double offset)
{
    PyObject *fields = rec;
    if (!PyTuple_Check(rec)) {
        fields = PySequence_Tuple(rec);
        if (fields == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object", Py_TYPE(rec)->tp_name);
            }
            return NULL;
        }
    } else {
        Py_INCREF(fields);
    }
    PyObject *result = NULL, *rid_str = NULL, *status_keep = NULL, *bytes_keep = NULL;
    char *duration = NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(fields);
    if (nf != 6) {
        if (nf > 6)
            PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 6)");
        else
            PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 6, got %zd)", nf);
        goto done;
    }
    PyObject *shape = PyTuple_GET_ITEM(fields, 0), *rid = PyTuple_GET_ITEM(fields, 1);
    PyObject *status = PyTuple_GET_ITEM(fields, 2), *nbytes = PyTuple_GET_ITEM(fields, 3);
    PyObject *started = PyTuple_GET_ITEM(fields, 4), *ended = PyTuple_GET_ITEM(fields, 5);

    Shaped *shaped = lookup(cache, count, next, fixed_of, shape);
    if (shaped == NULL)
        goto done;
    double end;
    if (as_double(ended, "ended", &end) < 0)
        goto done;
    double t = offset + end;
    long long whole;
    if (time_second(t, &whole) < 0)
        goto done;
    char head[TIME_HEAD_MAX];
    Py_ssize_t hl = time_head(t, whole, head);

    if (PyUnicode_CheckExact(rid)) { /* '%s' % rid */
        Py_INCREF(rid);
        rid_str = rid;
    } else if ((rid_str = PyObject_Str(rid)) == NULL) {
        goto done;
    }
    if (PyUnicode_READY(rid_str) < 0)
        goto done;

    Piece pieces[9] = {{head, hl, NULL}, {NULL, 0, rid_str}, {NULL, 0, shaped->fixed}};
    int np = 3;
    char sbuf[24], bbuf[24], dbuf[32];
    if (started == Py_None) {
        if (shaped->done) {
            PyErr_SetString(PyExc_TypeError, "not enough arguments for format string");
            goto done;
        }
    } else {
        if (!shaped->done) {
            PyErr_SetString(PyExc_TypeError, "not all arguments converted during string formatting");
            goto done;
        }
        double start;
        const char *st, *bt;
        Py_ssize_t sl, bl;
        if (format_int(status, sbuf, &st, &sl, &status_keep) < 0
            || format_int(nbytes, bbuf, &bt, &bl, &bytes_keep) < 0 || as_double(started, "started", &start) < 0)
            goto done;
        double ms = (end - start) * 1000;
        const char *dt = format_ms(ms, dbuf);
        if (dt == NULL) {
            duration = PyOS_double_to_string(ms, 'f', 3, 0, NULL); /* '%.3f' % ms, in general */
            if (duration == NULL)
                goto done;
            dt = duration;
        }
        pieces[np++] = (Piece){",\"status\":", 10, NULL};
        pieces[np++] = (Piece){st, sl, NULL};
        pieces[np++] = (Piece){",\"bytes\":", 9, NULL};
        pieces[np++] = (Piece){bt, bl, NULL};
        pieces[np++] = (Piece){",\"duration_ms\":", 15, NULL};
        pieces[np++] = (Piece){dt, (Py_ssize_t)strlen(dt), NULL};
    }
    result = join(pieces, np);
done:
    if (duration != NULL)
        PyMem_Free(duration);
    Py_XDECREF(status_keep);
    Py_XDECREF(bytes_keep);
    Py_XDECREF(rid_str);
    Py_DECREF(fields);
    return result;
}

static PyObject *
texts(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "texts() takes exactly 3 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *fixed_of = args[1];
    if (!PyCallable_Check(fixed_of)) {
        PyErr_Format(PyExc_TypeError, "texts() argument 2 must be callable, not %.200s", Py_TYPE(fixed_of)->tp_name);
        return NULL;
    }
    double offset;
    if (as_double(args[2], "offset", &offset) < 0)
        return NULL;
    /* A tuple of the records: fixed_of runs Python code, which must not pull items from under us. */
    PyObject *records = PySequence_Tuple(args[0]);
    if (records == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(records);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(records);
        return NULL;
    }
    Shaped cache[SHAPES];
    int count = 0, next = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = record_text(PyTuple_GET_ITEM(records, i), cache, &count, &next, fixed_of, offset);
        if (text == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, text);
    }
    for (int i = 0; i < count; i++) {
        Py_DECREF(cache[i].shape);
        Py_DECREF(cache[i].entry);
    }
    Py_DECREF(records);
    return out;
}

/* ---- RecordBuffer, unpack ------------------------------------------------------------------------- */

/* The daemon's audit queue (audit_records.RecordBuffer): one call per API request on the serving loop,
 * so add() does no allocation in the common case: the record's values go into one growing byte buffer
 * in the packed format that audit_records.py documents (and RecordBufferPy implements as the reference),
 * and its shape is an index into the buffer's distinct shapes, found by identity (the last shape first:
 * consecutive records very often share one; else an open-addressing table keyed by the pointer). */

#define REC_FIXED (4 + 1 + 4 + 8 + 8 + 8) /* a record's bytes besides its request id */
#define REC_MAX_RID 255

static inline void
put_u32(char *p, uint32_t v)
{
#if !PY_LITTLE_ENDIAN
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

static inline void
put_u64(char *p, uint64_t v)
{
#if !PY_LITTLE_ENDIAN
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static inline void
put_f64(char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(p, v);
}

static inline uint32_t
get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if !PY_LITTLE_ENDIAN
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if !PY_LITTLE_ENDIAN
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline double
get_f64(const unsigned char *p)
{
    uint64_t v = get_u64(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* time.monotonic() as CPython computes it on Linux: CLOCK_MONOTONIC in int64 nanoseconds, then
 * _PyTime_AsSecondsDouble (an integer division when whole seconds, else one double division). */
static int
monotonic_now(double *out)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    volatile double d; /* as CPython: no excess precision or reordering changes the rounding */
    if (t % 1000000000 == 0) {
        d = (double)(t / 1000000000);
    } else {
        d = (double)t;
        d /= 1e9;
    }
    *out = d;
    return 0;
}

/* A time argument: float or int (RecordBufferPy's _number). */
static inline int
time_arg(PyObject *v, const char *what, double *out)
{
    if (PyFloat_CheckExact(v)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if (PyFloat_Check(v) || PyLong_Check(v)) {
        *out = PyFloat_AsDouble(v);
        return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "%s must be a float, not %.200s", what, Py_TYPE(v)->tp_name);
    return -1;
}

/* A count argument: an int in 0..top (RecordBufferPy's _count); top is at least 2**31 - 1. An exact int
 * of one digit (every status, most body sizes) is read without the ~30 instructions of a call. */
static inline int
count_arg(PyObject *v, const char *what, long long top, long long *out)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (PyLong_CheckExact(v) && PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        Py_ssize_t small = PyUnstable_Long_CompactValue((PyLongObject *)v); /* |small| < 2**30 */
        if (small >= 0) {
            *out = small;
            return 0;
        }
    }
#else
    if (PyLong_CheckExact(v) && (Py_SIZE(v) == 0 || Py_SIZE(v) == 1)) { /* 0, or one digit: < 2**30 */
        *out = Py_SIZE(v) ? (long long)((PyLongObject *)v)->ob_digit[0] : 0;
        return 0;
    }
#endif
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None, not %.200s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && !overflow && PyErr_Occurred())
        return -1;
    if (overflow || x < 0 || x > top) {
        PyObject *text = PyObject_Str(v);
        if (text != NULL) {
            PyErr_Format(PyExc_ValueError, "%s out of range: %U", what, text);
            Py_DECREF(text);
        }
        return -1;
    }
    *out = x;
    return 0;
}

typedef struct {
    PyObject_HEAD
    char *data; /* the packed records */
    Py_ssize_t len, cap;
    Py_ssize_t count, starts; /* records, and how many of them are start records */
    PyObject **shapes;        /* strong references, first-appearance order */
    uint32_t nshapes, shapes_cap;
    uint32_t *table; /* 1 + index into shapes, 0: empty; 1 << bits slots, at most half full */
    int bits;
    PyObject *last; /* the shape of the last record (borrowed: it is in shapes), or NULL */
    uint32_t last_index;
} RecordBufferObject;

#define TABLE_BITS_MIN 4
#define KEEP_DATA (4 << 20) /* take() keeps a buffer up to this size for the next fill */

static inline size_t
slot_of(PyObject *shape, int bits)
{
    uint64_t h = (uint64_t)(uintptr_t)shape * 0x9E3779B97F4A7C15ULL; /* Fibonacci hashing: top bits */
    return (size_t)(h >> (64 - bits));
}

static int
table_grow(RecordBufferObject *self)
{
    int bits = self->table == NULL ? TABLE_BITS_MIN : self->bits + 1;
    if (bits > 40) {
        PyErr_SetString(PyExc_OverflowError, "too many audit record shapes");
        return -1;
    }
    size_t size = (size_t)1 << bits, mask = size - 1;
    uint32_t *table = PyMem_Calloc(size, sizeof(uint32_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint32_t i = 0; i < self->nshapes; i++) {
        size_t s = slot_of(self->shapes[i], bits);
        while (table[s])
            s = (s + 1) & mask;
        table[s] = i + 1;
    }
    PyMem_Free(self->table);
    self->table = table;
    self->bits = bits;
    return 0;
}

/* The index of shape in this fill's shapes, adding it (a new reference) if it is not there. */
static int
shape_index(RecordBufferObject *self, PyObject *shape, uint32_t *out)
{
    if (self->table == NULL || (size_t)self->nshapes * 2 >= ((size_t)1 << self->bits)) {
        if (table_grow(self) < 0)
            return -1;
    }
    size_t mask = ((size_t)1 << self->bits) - 1;
    size_t s = slot_of(shape, self->bits);
    for (;; s = (s + 1) & mask) {
        uint32_t e = self->table[s];
        if (e == 0)
            break;
        if (self->shapes[e - 1] == shape) {
            *out = e - 1;
            return 0;
        }
    }
    if (self->nshapes == self->shapes_cap) {
        if (self->shapes_cap >= UINT32_MAX / 2) {
            PyErr_SetString(PyExc_OverflowError, "too many audit record shapes");
            return -1;
        }
        uint32_t cap = self->shapes_cap ? self->shapes_cap * 2 : 16;
        PyObject **shapes = PyMem_Realloc(self->shapes, (size_t)cap * sizeof(PyObject *));
        if (shapes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->shapes = shapes;
        self->shapes_cap = cap;
    }
    Py_INCREF(shape);
    self->shapes[self->nshapes] = shape;
    self->table[s] = ++self->nshapes;
    *out = self->nshapes - 1;
    return 0;
}

static int
reserve(RecordBufferObject *self, Py_ssize_t more)
{
    if (self->cap - self->len >= more)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : 16384;
    while (cap - self->len < more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(self->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->data = data;
    self->cap = cap;
    return 0;
}

static PyObject *
rb_add(RecordBufferObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 && nargs != 6) {
        PyErr_Format(PyExc_TypeError, "add() takes 5 or 6 positional arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *shape = args[0], *rid = args[1], *status = args[2], *nbytes = args[3], *started = args[4];
    PyObject *ended = nargs == 6 ? args[5] : Py_None;
    if (!PyUnicode_Check(rid)) {
        PyErr_Format(PyExc_TypeError, "request id must be str, not %.200s", Py_TYPE(rid)->tp_name);
        return NULL;
    }
    if (PyUnicode_READY(rid) < 0)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(rid);
    if (!PyUnicode_IS_ASCII(rid) || n > REC_MAX_RID) {
        PyErr_SetString(PyExc_ValueError, "request id must be ASCII and at most 255 characters");
        return NULL;
    }
    long long st = -1, nb = -1;
    double begun = NAN, end;
    int start = status == Py_None;
    if (start && nbytes == Py_None && started == Py_None) {
        /* a start record */
    } else if (start || nbytes == Py_None || started == Py_None) {
        PyErr_SetString(PyExc_TypeError,
                        "status, bytes and started must be all None (a start record) or all set");
        return NULL;
    } else {
        if (time_arg(started, "started", &begun) < 0)
            return NULL;
        if (isnan(begun)) {
            PyErr_SetString(PyExc_ValueError, "started must not be NaN");
            return NULL;
        }
        if (count_arg(status, "status", INT32_MAX, &st) < 0 || count_arg(nbytes, "bytes", INT64_MAX, &nb) < 0)
            return NULL;
    }
    if (ended == Py_None ? monotonic_now(&end) < 0 : time_arg(ended, "ended", &end) < 0)
        return NULL;
    /* Room first and the shape last: a failed add leaves nothing behind. */
    if (reserve(self, REC_FIXED + n) < 0)
        return NULL;
    uint32_t index;
    if (shape == self->last) {
        index = self->last_index;
    } else {
        if (shape_index(self, shape, &index) < 0)
            return NULL;
        self->last = shape;
        self->last_index = index;
    }
    char *p = self->data + self->len;
    put_u32(p, index);
    p[4] = (char)n;
    memcpy(p + 5, PyUnicode_DATA(rid), (size_t)n);
    p += 5 + n;
    put_u32(p, (uint32_t)(int32_t)st);
    put_u64(p + 4, (uint64_t)nb);
    put_f64(p + 12, begun);
    put_f64(p + 20, end);
    self->len += REC_FIXED + n;
    self->count++;
    self->starts += start;
    Py_RETURN_NONE;
}

/* Empties the shape table (the shapes themselves are the caller's to release). */
static void
rb_reset_table(RecordBufferObject *self)
{
    self->nshapes = 0;
    self->last = NULL;
    if (self->table != NULL) {
        if (self->bits > 10) { /* after a rare fill of many shapes: back to a small table */
            PyMem_Free(self->table);
            self->table = NULL;
        } else {
            memset(self->table, 0, ((size_t)1 << self->bits) * sizeof(uint32_t));
        }
    }
}

static PyObject *
rb_take(RecordBufferObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *data = PyBytes_FromStringAndSize(self->data, self->len);
    if (data == NULL)
        return NULL;
    PyObject *shapes = PyList_New(self->nshapes);
    if (shapes == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    for (uint32_t i = 0; i < self->nshapes; i++)
        PyList_SET_ITEM(shapes, i, self->shapes[i]); /* the buffer's references move to the list */
    rb_reset_table(self);
    self->len = self->count = self->starts = 0;
    if (self->cap > KEEP_DATA) {
        PyMem_Free(self->data);
        self->data = NULL;
        self->cap = 0;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(shapes);
        Py_DECREF(data);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, shapes);
    PyTuple_SET_ITEM(result, 1, data);
    return result;
}

static Py_ssize_t
rb_len(RecordBufferObject *self)
{
    return self->count;
}

static int
rb_traverse(RecordBufferObject *self, visitproc visit, void *arg)
{
    for (uint32_t i = 0; i < self->nshapes; i++)
        Py_VISIT(self->shapes[i]);
    return 0;
}

/* The GC breaks a cycle through a shape: the records that refer to it go too (the fill is dropped). */
static int
rb_clear(RecordBufferObject *self)
{
    PyObject **old = self->shapes;
    uint32_t n = self->nshapes;
    self->shapes = NULL; /* the buffer is consistent (and empty) before any shape's finalizer runs */
    self->shapes_cap = 0;
    rb_reset_table(self);
    self->len = self->count = self->starts = 0;
    for (uint32_t i = 0; i < n; i++)
        Py_DECREF(old[i]);
    PyMem_Free(old);
    return 0;
}

static void
rb_dealloc(RecordBufferObject *self)
{
    PyObject_GC_UnTrack(self);
    rb_clear(self);
    PyMem_Free(self->data);
    PyMem_Free(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
rb_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RecordBuffer() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0); /* zeroed: an empty buffer */
}

static PyMethodDef rb_methods[] = {
    {"add", (PyCFunction)(void (*)(void))rb_add, METH_FASTCALL,
     "add(shape, rid, status, nbytes, started, ended=None, /): queue one record (ended: now, monotonic)."},
    {"take", (PyCFunction)rb_take, METH_NOARGS,
     "take() -> (shapes, data): the distinct shapes and the packed records; empties the buffer."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef rb_members[] = {
    {"starts", T_PYSSIZET, offsetof(RecordBufferObject, starts), READONLY,
     "How many of the queued records are start records."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods rb_as_sequence = {
    .sq_length = (lenfunc)rb_len,
};

static PyTypeObject RecordBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dockyard.security._chainfast.RecordBuffer",
    .tp_basicsize = sizeof(RecordBufferObject),
    .tp_dealloc = (destructor)rb_dealloc,
    .tp_as_sequence = &rb_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The audit queue: records packed as audit_records.py documents (RecordBufferPy is the reference).",
    .tp_traverse = (traverseproc)rb_traverse,
    .tp_clear = (inquiry)rb_clear,
    .tp_methods = rb_methods,
    .tp_members = rb_members,
    .tp_new = rb_new,
};

/* One record's request id and tail, checked (audit_records._unpack_py's checks, in its order).
 * Returns the record's end offset, or -1 with ValueError set. */
static Py_ssize_t
check_record(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t nshapes)
{
    if (end - pos < 5) {
        PyErr_SetString(PyExc_ValueError, "truncated audit record");
        return -1;
    }
    uint32_t index = get_u32(d + pos);
    Py_ssize_t n = d[pos + 4];
    pos += 5;
    if (end - pos < n + 28) {
        PyErr_SetString(PyExc_ValueError, "truncated audit record");
        return -1;
    }
    if ((Py_ssize_t)index >= nshapes) {
        PyErr_Format(PyExc_ValueError, "audit record shape index %u out of range", (unsigned)index);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (d[pos + i] & 0x80) {
            PyErr_SetString(PyExc_ValueError, "audit record request id is not ASCII");
            return -1;
        }
    pos += n;
    int32_t status = (int32_t)get_u32(d + pos);
    int64_t nbytes = (int64_t)get_u64(d + pos + 4);
    double started = get_f64(d + pos + 12);
    if (!(status == -1 && nbytes == -1 && isnan(started)) && (status < 0 || nbytes < 0 || isnan(started))) {
        PyErr_SetString(PyExc_ValueError, "audit record with an impossible status, byte count or start time");
        return -1;
    }
    return pos + 28;
}

/* One record's tuple (the data was checked). */
static PyObject *
record_tuple(const unsigned char *d, Py_ssize_t pos, PyObject *shapes)
{
    PyObject *rec = PyTuple_New(6);
    if (rec == NULL)
        return NULL;
    PyObject *shape = PyTuple_GET_ITEM(shapes, get_u32(d + pos));
    Py_INCREF(shape);
    PyTuple_SET_ITEM(rec, 0, shape);
    Py_ssize_t n = d[pos + 4];
    pos += 5;
    PyObject *rid = PyUnicode_New(n, 127);
    if (rid == NULL)
        goto error;
    memcpy(PyUnicode_DATA(rid), d + pos, (size_t)n);
    PyTuple_SET_ITEM(rec, 1, rid);
    pos += n;
    int32_t status = (int32_t)get_u32(d + pos);
    PyObject *values[4];
    if (status == -1) {
        values[0] = values[1] = values[2] = Py_None;
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
        Py_INCREF(Py_None);
    } else {
        values[0] = PyLong_FromLong(status);
        values[1] = PyLong_FromLongLong((long long)(int64_t)get_u64(d + pos + 4));
        values[2] = PyFloat_FromDouble(get_f64(d + pos + 12));
    }
    values[3] = PyFloat_FromDouble(get_f64(d + pos + 20));
    for (int i = 0; i < 4; i++) /* set even when NULL: the tuple's dealloc skips them */
        PyTuple_SET_ITEM(rec, 2 + i, values[i]);
    for (int i = 0; i < 4; i++)
        if (values[i] == NULL)
            goto error;
    return rec;
error:
    Py_DECREF(rec);
    return NULL;
}

static PyObject *
unpack(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "unpack() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyList_Check(args[0]) && !PyTuple_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "shapes must be a list or tuple, not %.200s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    /* Making objects can run the GC and so a finalizer, which must not change the shapes or the data
     * checked in the first pass under the second: a tuple of the shapes, and bytes of the data. */
    PyObject *data;
    if (PyBytes_CheckExact(args[1])) {
        Py_INCREF(args[1]);
        data = args[1];
    } else {
        Py_buffer view;
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        data = PyBytes_FromStringAndSize(view.buf, view.len);
        PyBuffer_Release(&view);
        if (data == NULL)
            return NULL;
    }
    PyObject *shapes = PySequence_Tuple(args[0]);
    PyObject *out = NULL;
    if (shapes == NULL)
        goto done;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data), count = 0, nshapes = PyTuple_GET_SIZE(shapes);
    for (Py_ssize_t pos = 0; pos < end; count++)
        if ((pos = check_record(d, pos, end, nshapes)) < 0)
            goto done;
    out = PyList_New(count);
    if (out == NULL)
        goto done;
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *rec = record_tuple(d, pos, shapes);
        if (rec == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, rec);
        pos += REC_FIXED + d[pos + 4];
    }
done:
    Py_XDECREF(shapes);
    Py_DECREF(data);
    return out;
}

/* ---- render --------------------------------------------------------------------------------------- */

/* render(templates, data, pos, count, head, offset, dropped) renders packed records straight into one
 * bytes object: the writer's path without a tuple, a str and a bytes object per record. It is
 * unpack + texts + the chain's "dropped_before" + chain + b"\n".join, byte for byte (the reference is
 * audit_writer._render_py, built from those functions); templates[i] is what texts' fixed_of gives for
 * shape i: (fixed text, done).
 *
 * Errors are those of the reference, in its order: the records' bytes are checked first (unpack), then
 * each record's template, time and phase (texts, templates in first-use order), then the texts are
 * encoded (chain: a lone surrogate in a template or the head is a UnicodeEncodeError). */

typedef struct {
    PyObject *fixed; /* borrowed from the templates tuple, which the call holds */
    const char *utf8; /* its UTF-8 (cached by the str), once the writing pass has needed it */
    Py_ssize_t len;
    char checked, done;
} Template;

/* The output is built here, kept between calls (a frame's chunks reuse it), then copied into bytes. */
static char *out_data;
static Py_ssize_t out_len, out_cap;
#define OUT_KEEP (4 << 20)

static int
out_reserve(Py_ssize_t more)
{
    if (out_cap - out_len >= more)
        return 0;
    Py_ssize_t cap = out_cap ? out_cap : 65536;
    while (cap - out_len < more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(out_data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out_data = data;
    out_cap = cap;
    return 0;
}

static inline void
out_put(const char *p, Py_ssize_t n)
{
    memcpy(out_data + out_len, p, (size_t)n);
    out_len += n;
}

/* A count argument of render: an int in 0..PY_SSIZE_T_MAX. */
static int
index_arg(PyObject *v, const char *what, Py_ssize_t *out)
{
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "render() %s must be int, not %.200s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && !overflow && PyErr_Occurred())
        return -1;
    if (overflow || x < 0 || x > PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_ValueError, "render() %s out of range", what);
        return -1;
    }
    *out = (Py_ssize_t)x;
    return 0;
}

/* Checks a template the first time a record uses it (texts' fixed_of result check). */
static int
template_check(Template *tp, PyObject *entry)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 0))) {
        PyErr_SetString(PyExc_TypeError, "templates must be (str, bool) tuples");
        return -1;
    }
    int done = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1));
    if (done < 0 || PyUnicode_READY(PyTuple_GET_ITEM(entry, 0)) < 0)
        return -1;
    tp->fixed = PyTuple_GET_ITEM(entry, 0);
    tp->done = (char)done;
    tp->checked = 1;
    return 0;
}

/* Writes one record's line (and its newline) chained after the head hp[0:hl]; the new head in cur. */
static int
render_line(const unsigned char *d, Py_ssize_t pos, Template *tp, double offset, long long dropped,
            const char *hp, Py_ssize_t hl, char cur[64])
{
    static const char PREV[] = ",\"prev\":\"";
    Py_ssize_t n = d[pos + 4];
    const unsigned char *rid = d + pos + 5, *tail = d + pos + 5 + n;
    int32_t status = (int32_t)get_u32(tail);
    double started = get_f64(tail + 12), ended = get_f64(tail + 20);
    if (tp->utf8 == NULL && (tp->utf8 = PyUnicode_AsUTF8AndSize(tp->fixed, &tp->len)) == NULL)
        return -1;
    double t = offset + ended;
    long long whole;
    if (time_second(t, &whole) < 0) /* checked before: only gmtime's text is made again */
        return -1;
    char head[TIME_HEAD_MAX], sbuf[24], bbuf[24], dbuf[32], drop[24];
    Py_ssize_t tl = time_head(t, whole, head);
    const char *st = NULL, *bt = NULL, *dt = NULL, *dr = NULL;
    char *duration = NULL;
    Py_ssize_t more = 0, dl = 0;
    if (status != -1) {
        st = digits_back(sbuf + 24, (unsigned long long)status);
        bt = digits_back(bbuf + 24, get_u64(tail + 4));
        double ms = (ended - started) * 1000;
        dt = format_ms(ms, dbuf);
        if (dt == NULL && (dt = duration = PyOS_double_to_string(ms, 'f', 3, 0, NULL)) == NULL)
            return -1;
        dl = (Py_ssize_t)strlen(dt);
        more = 10 + (sbuf + 24 - st) + 9 + (bbuf + 24 - bt) + 15 + dl;
    }
    if (dropped > 0) {
        dr = digits_back(drop + 24, (unsigned long long)dropped);
        more += 18 + (drop + 24 - dr);
    }
    if (out_reserve(tl + n + tp->len + more + (Py_ssize_t)sizeof(PREV) - 1 + hl + 3) < 0) {
        PyMem_Free(duration);
        return -1;
    }
    Py_ssize_t start = out_len;
    out_put(head, tl);
    out_put((const char *)rid, n);
    out_put(tp->utf8, tp->len);
    if (st != NULL) {
        out_put(",\"status\":", 10);
        out_put(st, sbuf + 24 - st);
        out_put(",\"bytes\":", 9);
        out_put(bt, bbuf + 24 - bt);
        out_put(",\"duration_ms\":", 15);
        out_put(dt, dl);
        PyMem_Free(duration);
    }
    if (dr != NULL) {
        out_put(",\"dropped_before\":", 18);
        out_put(dr, drop + 24 - dr);
    }
    out_put(PREV, sizeof(PREV) - 1);
    out_put(hp, hl);
    out_put("\"}", 2);
    if (sha256_hex(out_data + start, (size_t)(out_len - start), cur) < 0)
        return -1;
    out_data[out_len++] = '\n';
    return 0;
}

static PyObject *
render(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "render() takes exactly 7 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *head = args[4];
    if (!PyList_Check(args[0]) && !PyTuple_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "templates must be a list or tuple, not %.200s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) /* held: a bytearray cannot change under us */
        return NULL;
    PyObject *templates = NULL, *result = NULL;
    Template *tps = NULL;
    Py_ssize_t pos, count;
    long long dropped;
    double offset;
    if (index_arg(args[2], "pos", &pos) < 0 || index_arg(args[3], "count", &count) < 0)
        goto done;
    if (!PyUnicode_Check(head)) {
        PyErr_Format(PyExc_TypeError, "render() head must be str, not %.200s", Py_TYPE(head)->tp_name);
        goto done;
    }
    Py_ssize_t dropped_index;
    if (as_double(args[5], "offset", &offset) < 0 || index_arg(args[6], "dropped", &dropped_index) < 0)
        goto done;
    dropped = (long long)dropped_index;
    const unsigned char *d = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    if (pos > end) {
        PyErr_SetString(PyExc_ValueError, "render() pos out of range");
        goto done;
    }
    /* The records' bytes, as unpack checks them. */
    Py_ssize_t stop = pos, n = 0;
    templates = PySequence_Tuple(args[0]); /* a tuple of our own: nothing can change it under us */
    if (templates == NULL)
        goto done;
    Py_ssize_t ntemplates = PyTuple_GET_SIZE(templates);
    for (; n < count && stop < end; n++)
        if ((stop = check_record(d, stop, end, ntemplates)) < 0)
            goto done;
    if (n == 0) {
        result = Py_BuildValue("(y#On)", "", (Py_ssize_t)0, head, pos);
        goto done;
    }
    /* Each record's template, time and phase, as texts checks them. */
    tps = PyMem_Calloc((size_t)ntemplates, sizeof(Template));
    if (tps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t p = pos; p < stop; p += REC_FIXED + d[p + 4]) {
        uint32_t index = get_u32(d + p);
        if (!tps[index].checked && template_check(&tps[index], PyTuple_GET_ITEM(templates, index)) < 0)
            goto done;
        const unsigned char *tail = d + p + 5 + d[p + 4];
        long long whole;
        if (time_second(offset + get_f64(tail + 20), &whole) < 0)
            goto done;
        int start = (int32_t)get_u32(tail) == -1;
        if (start && tps[index].done) {
            PyErr_SetString(PyExc_TypeError, "not enough arguments for format string");
            goto done;
        }
        if (!start && !tps[index].done) {
            PyErr_SetString(PyExc_TypeError, "not all arguments converted during string formatting");
            goto done;
        }
    }
    /* The lines, chained. */
    Py_ssize_t hl;
    const char *hp = PyUnicode_AsUTF8AndSize(head, &hl); /* owned by head; then the last line's hash */
    if (hp == NULL)
        goto done;
    char cur[64];
    out_len = 0;
    for (Py_ssize_t p = pos; p < stop; p += REC_FIXED + d[p + 4]) {
        if (render_line(d, p, &tps[get_u32(d + p)], offset, p == pos ? dropped : 0, hp, hl, cur) < 0)
            goto done;
        hp = cur;
        hl = 64;
    }
    PyObject *blob = PyBytes_FromStringAndSize(out_data, out_len);
    PyObject *new_head = blob ? PyUnicode_FromStringAndSize(cur, 64) : NULL;
    if (new_head != NULL)
        result = Py_BuildValue("(NNn)", blob, new_head, stop);
    else
        Py_XDECREF(blob);
done:
    if (out_cap > OUT_KEEP) { /* after a rare huge call: do not keep its memory */
        PyMem_Free(out_data);
        out_data = NULL;
        out_cap = 0;
    }
    out_len = 0;
    PyMem_Free(tps);
    Py_XDECREF(templates);
    PyBuffer_Release(&view);
    return result;
}

/* ---- module --------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"chain", (PyCFunction)(void (*)(void))chain, METH_FASTCALL,
     "chain(bodies, head) -> (lines, head): each body as a chained line, and the new chain head."},
    {"texts", (PyCFunction)(void (*)(void))texts, METH_FASTCALL,
     "texts(records, fixed_of, offset) -> list[str]: each audit record's JSON text."},
    {"unpack", (PyCFunction)(void (*)(void))unpack, METH_FASTCALL,
     "unpack(shapes, data) -> list[Record]: the records RecordBuffer.take() packed."},
    {"render", (PyCFunction)(void (*)(void))render, METH_FASTCALL,
     "render(templates, data, pos, count, head, offset, dropped) -> (lines, head, pos): up to count packed "
     "records from data[pos:] as chained lines, each followed by a newline."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dockyard.security._chainfast",
    "The audit writer's inner loops in C (see audit._chain_py and audit_writer._texts_py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__chainfast(void)
{
#ifdef CHAINFAST_EVP
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        sha256_ctx = EVP_MD_CTX_new();
        if (sha256_md == NULL || sha256_ctx == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
            return NULL;
        }
    }
#endif
    if (PyType_Ready(&RecordBufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RecordBuffer", (PyObject *)&RecordBufferType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
