/*
 * rhyzome-testkernel: COM1 console (0x3f8, 115200 8N1) and a small printf.
 * Lines end with a bare "\n" (no CR), like the stable console protocol says.
 */
#include "kernel.h"

#define COM1 0x3f8

void serial_init(void)
{
    outb(COM1 + 1, 0x00); /* no UART interrupts */
    outb(COM1 + 3, 0x80); /* DLAB on */
    outb(COM1 + 0, 0x01); /* divisor 1 = 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8 data bits, no parity, 1 stop bit, DLAB off */
    outb(COM1 + 2, 0x07); /* FIFO on and cleared */
    outb(COM1 + 4, 0x03); /* DTR, RTS; OUT2 off: no IRQ */
}

static void serial_putc(char c)
{
    /* Wait for the transmit holding register; bounded so that a missing
     * UART (reads as 0xff anyway) or a stuck backend cannot hang us. */
    for (uint32_t i = 0; i < 1000000; i++) {
        if (inb(COM1 + 5) & 0x20)
            break;
    }
    outb(COM1, (uint8_t)c);
}

void console_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        serial_putc(s[i]);
}

void kputs(const char *s)
{
    console_write(s, strlen(s));
}

/* ---- formatter --------------------------------------------------------- */
struct sink {
    char *buf;  /* NULL: straight to the serial port */
    size_t cap;
    size_t len;
};

static void emit(struct sink *o, char c)
{
    if (!o->buf)
        serial_putc(c);
    else if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void emit_str(struct sink *o, const char *s)
{
    while (*s)
        emit(o, *s++);
}

static void emit_num(struct sink *o, uint64_t v, unsigned base, int width,
                     char pad, int neg)
{
    char tmp[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (neg)
        width--;
    if (neg && pad == '0')
        emit(o, '-');
    while (width-- > n)
        emit(o, pad);
    if (neg && pad != '0')
        emit(o, '-');
    while (n)
        emit(o, tmp[--n]);
}

/* Escaped, double-quoted: \" \\ and \xHH for bytes outside 0x20..0x7e. */
static void emit_quoted(struct sink *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    emit(o, '"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '"' || c == '\\') {
            emit(o, '\\');
            emit(o, (char)c);
        } else if (c < 0x20 || c > 0x7e) {
            emit(o, '\\');
            emit(o, 'x');
            emit(o, hex[c >> 4]);
            emit(o, hex[c & 15]);
        } else {
            emit(o, (char)c);
        }
    }
    emit(o, '"');
}

static void vformat(struct sink *o, const char *fmt, __builtin_va_list ap)
{
    for (; *fmt; fmt++) {
        int width = 0, lng = 0;
        char pad = ' ';
        if (*fmt != '%') {
            emit(o, *fmt);
            continue;
        }
        fmt++;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd': {
            int64_t v = lng >= 2 ? __builtin_va_arg(ap, int64_t)
                                 : __builtin_va_arg(ap, int32_t);
            uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
            emit_num(o, u, 10, width, pad, v < 0);
            break;
        }
        case 'u':
        case 'x': {
            uint64_t v = lng >= 2 ? __builtin_va_arg(ap, uint64_t)
                                  : __builtin_va_arg(ap, uint32_t);
            emit_num(o, v, *fmt == 'u' ? 10 : 16, width, pad, 0);
            break;
        }
        case 'c':
            emit(o, (char)__builtin_va_arg(ap, int));
            break;
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            emit_str(o, s ? s : "(null)");
            break;
        }
        case 'q': {
            const char *s = __builtin_va_arg(ap, const char *);
            size_t n = __builtin_va_arg(ap, size_t);
            emit_quoted(o, s, n);
            break;
        }
        case 'I': {
            uint32_t a = __builtin_va_arg(ap, uint32_t);
            emit_num(o, a >> 24, 10, 0, ' ', 0);
            emit(o, '.');
            emit_num(o, (a >> 16) & 255, 10, 0, ' ', 0);
            emit(o, '.');
            emit_num(o, (a >> 8) & 255, 10, 0, ' ', 0);
            emit(o, '.');
            emit_num(o, a & 255, 10, 0, ' ', 0);
            break;
        }
        case '%':
            emit(o, '%');
            break;
        default:
            emit(o, '%');
            if (*fmt)
                emit(o, *fmt);
            else
                return;
        }
    }
}

void kprintf(const char *fmt, ...)
{
    struct sink o = {NULL, 0, 0};
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    vformat(&o, fmt, ap);
    __builtin_va_end(ap);
}

/* Returns the length written (excluding NUL), truncated to cap - 1. */
int ksnprintf(char *buf, size_t cap, const char *fmt, ...)
{
    struct sink o = {buf, cap, 0};
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    vformat(&o, fmt, ap);
    __builtin_va_end(ap);
    if (cap == 0)
        return 0;
    if (o.len >= cap)
        o.len = cap - 1;
    buf[o.len] = 0;
    return (int)o.len;
}
