/* dockyard.security._chainfast: the audit writer's two inner loops in C.
 *
 * The writer process (audit_writer.py) formats one JSON line per API request and chains it with SHA-256
 * (audit.py). In Python that is ~5 us of CPU per record, which on a small machine competes with the
 * daemon serving the requests; here it is a fraction of a microsecond. Both functions are byte-for-byte
 * replacements of the Python reference loops (audit._chain_py, audit_writer._texts_py), which the unit
 * tests compare them against; when this module is not built, those loops serve.
 *
 *   chain(bodies, head) -> (lines, head)
 *       line = f'{body},"prev":"{head}"}}'.encode(); head = sha256(line).hexdigest(), for each body.
 *   texts(records, fixed_of, offset) -> list[str]
 *       The JSON text of each record (see audit_writer.Record); fixed_of(shape) -> (fixed, done) gives a
 *       shape's fixed middle text and whether the record has the status tail.
 *
 * SHA-256 is OpenSSL's (what hashlib uses, SHA-NI where the CPU has it).
 * Nothing here releases the GIL, so the module's static state needs no lock.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
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
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        goto done;
    }
    if (isinf(t)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        goto done;
    }
    if (!(t > -9.2e18 && t < 9.2e18)) {
        PyErr_SetString(PyExc_OverflowError, "timestamp out of range for platform time_t");
        goto done;
    }
    long long whole = (long long)t; /* int(t): toward zero */
    long long usec = (long long)((t - (double)whole) * 1e6);
    if ((!have_second || whole != last_second) && set_second(whole) < 0)
        goto done;

    /* {"time":"<seconds>.<usec>Z","request_id":"<rid><fixed>[,"status":..] */
    char head[sizeof(second_text) + 64];
    Py_ssize_t hl = 0;
    memcpy(head, "{\"time\":\"", 9);
    hl = 9;
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
    hl += 17;

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

/* ---- module --------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"chain", (PyCFunction)(void (*)(void))chain, METH_FASTCALL,
     "chain(bodies, head) -> (lines, head): each body as a chained line, and the new chain head."},
    {"texts", (PyCFunction)(void (*)(void))texts, METH_FASTCALL,
     "texts(records, fixed_of, offset) -> list[str]: each audit record's JSON text."},
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
    return PyModule_Create(&module);
}
