/* The daemon's audit queue (audit_records.RecordBuffer): one call per API request on the serving loop,
 * so add() does no allocation in the common case: the record's values go into one growing byte buffer
 * in the packed format that audit_records.py documents (and RecordBufferPy implements as the reference),
 * and its shape is an index into the buffer's distinct shapes, found by identity (the last shape first:
 * consecutive records very often share one; else an open-addressing table keyed by the pointer). */

#include "chainfast.h"
#include <structmember.h>

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
        if (cf_as_double(started, "started", &begun) < 0)
            return NULL;
        if (isnan(begun)) {
            PyErr_SetString(PyExc_ValueError, "started must not be NaN");
            return NULL;
        }
        if (count_arg(status, "status", INT32_MAX, &st) < 0 || count_arg(nbytes, "bytes", INT64_MAX, &nb) < 0)
            return NULL;
    }
    if (ended == Py_None ? monotonic_now(&end) < 0 : cf_as_double(ended, "ended", &end) < 0)
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

PyTypeObject cf_RecordBufferType = {
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
