/* Kafka's DefaultPartitioner hash (murmur2, as org.apache.kafka.common.utils.Utils.murmur2) in C.
 *
 * kafka-python's pure-Python murmur2 costs ~6 µs per key: in the gateway that was a tenth of a position's
 * CPU whenever a terminal's plate was not yet in the batcher's cache (docs/performance.md). Optional, like
 * the gateway's front end: without a compiler the pure-Python function is used (streams/batcher.py), and
 * tests/test_kafkahash.py holds this one to it and to Kafka's own test vectors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint32_t murmur2(const unsigned char *data, Py_ssize_t length)
{
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    Py_ssize_t length4 = length / 4;
    for (Py_ssize_t i = 0; i < length4; i++) {
        const unsigned char *p = data + 4 * i;
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = data + (length & ~(Py_ssize_t)3);
    switch (length % 4) {
    case 3: h ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1: h ^= (uint32_t)tail[0];
            h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static PyObject *py_murmur2(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t h = murmur2((const unsigned char *)view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

static PyMethodDef methods[] = {
    {"murmur2", py_murmur2, METH_O,
     "murmur2(data: bytes) -> int: Kafka's murmur2 of the bytes, unsigned 32-bit (as kafka-python's murmur2)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kafkahash",
                                    "Kafka's murmur2 partitioner hash in C.", -1, methods};

PyMODINIT_FUNC PyInit__kafkahash(void) { return PyModule_Create(&module); }
