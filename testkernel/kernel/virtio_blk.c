/*
 * rhyzome-testkernel: the first legacy virtio-blk device, driven
 * synchronously one 512-byte sector at a time, as Solo5's virtio bindings do
 * (solo5_block_read / solo5_block_write wait for each request).
 *
 * At init it prints the capacity and the FNV-1a 32-bit checksum of sector 0.
 * Afterwards main.c (--blk-write / --blk-read) and net.c (the UDP commands
 * blk-write, blk-read, blk-capacity) read and write sectors through
 * vblk_read / vblk_write.
 *
 * Errors are reported with Solo5's result names: a request the device
 * refuses (VIRTIO_BLK_S_IOERR, which is what QEMU answers to a write on a
 * read-only disk) is SOLO5_R_EUNSPEC, as in Solo5's virtio_blk_op_sync; a
 * sector outside the device is SOLO5_R_EINVAL, as in solo5_block_write's
 * bounds check.  Solo5's bindings do not look at VIRTIO_BLK_F_RO themselves,
 * and neither does this driver: the device is the judge.
 */
#include "kernel.h"

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_F_RO (1u << 5)

static uint8_t blkq_mem[32 * 1024] __attribute__((aligned(4096)));
static struct {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
} __attribute__((packed)) req;
static uint8_t sector_buf[VBLK_SECTOR] __attribute__((aligned(16)));
static volatile uint8_t req_status;
static struct vq q;
static uint16_t io;
static uint64_t capacity; /* in sectors */
static int present;

int vblk_present(void)
{
    return present;
}

uint64_t vblk_capacity(void)
{
    return capacity;
}

/* One request on sector `s` through sector_buf; 0 or a Solo5 result name. */
static const char *vblk_op(uint32_t type, uint64_t s)
{
    uint32_t id, len;
    if (!present)
        return "SOLO5_R_EINVAL";
    if (s >= capacity)
        return "SOLO5_R_EINVAL";
    req.type = type;
    req.reserved = 0;
    req.sector = s;
    req_status = 0xFF;
    vq_set_desc(&q, 0, (uint32_t)(uintptr_t)&req, sizeof(req),
                VRING_DESC_F_NEXT, 1);
    vq_set_desc(&q, 1, (uint32_t)(uintptr_t)sector_buf, sizeof(sector_buf),
                (uint16_t)((type == VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0) |
                           VRING_DESC_F_NEXT),
                2);
    vq_set_desc(&q, 2, (uint32_t)(uintptr_t)&req_status, 1,
                VRING_DESC_F_WRITE, 0);
    vq_push_avail(&q, 0);
    vq_notify(io, &q);
    for (uint32_t i = 0; i < 5000; i++) {
        if (vq_pop_used(&q, &id, &len))
            break;
        delay_ms(1);
    }
    return req_status == 0 ? 0 : "SOLO5_R_EUNSPEC";
}

const char *vblk_read(uint64_t s, uint8_t out[VBLK_SECTOR])
{
    const char *err = vblk_op(VIRTIO_BLK_T_IN, s);
    if (!err)
        memcpy(out, sector_buf, VBLK_SECTOR);
    return err;
}

const char *vblk_write(uint64_t s, const uint8_t in[VBLK_SECTOR])
{
    memcpy(sector_buf, in, VBLK_SECTOR);
    return vblk_op(VIRTIO_BLK_T_OUT, s);
}

int vblk_init(const struct pci_dev *d)
{
    uint32_t features, h = 2166136261u;
    uint8_t s0[VBLK_SECTOR];
    if (present) {
        /* Only the first disk is driven; the others' sizes are printed so that tests
         * can tell which volume Solo5 would bind to which manifest device. */
        static int others;
        uint16_t other_io;
        uint64_t other_capacity;
        if (virtio_legacy_begin(d, &other_io, &features) < 0)
            return -1;
        other_capacity = (uint64_t)inl((uint16_t)(other_io + 0x14)) |
                         ((uint64_t)inl((uint16_t)(other_io + 0x18)) << 32);
        kprintf(TK "block%d capacity=%llu sectors\n", ++others, other_capacity);
        return 0;
    }
    if (virtio_legacy_begin(d, &io, &features) < 0)
        return -1;
    outl((uint16_t)(io + 0x04), 0); /* no optional features */
    if (vq_setup(io, 0, &q, blkq_mem, sizeof(blkq_mem)) < 0 || q.num < 3)
        return -1;
    outb((uint16_t)(io + 0x12), 1 | 2 | 4);
    /* device-specific config: capacity, a u64 count of 512-byte sectors */
    capacity = (uint64_t)inl((uint16_t)(io + 0x14)) |
               ((uint64_t)inl((uint16_t)(io + 0x18)) << 32);
    present = 1;
    kprintf(TK "block capacity=%llu sectors read_only=%u\n", capacity,
            (features & VIRTIO_BLK_F_RO) ? 1u : 0u);
    if (vblk_read(0, s0)) {
        kprintf(TK "warning: virtio-blk: reading sector 0 failed\n");
        return -1;
    }
    for (uint32_t i = 0; i < sizeof(s0); i++) {
        h ^= s0[i];
        h *= 16777619u;
    }
    kprintf(TK "block sector0 checksum=%08x\n", h);
    return 0;
}

/* The text at the start of a sector: up to its first NUL, printable
 * characters only (others end it). */
size_t vblk_text_len(const uint8_t s[VBLK_SECTOR])
{
    size_t n = 0;
    while (n < VBLK_SECTOR && s[n] >= 0x20 && s[n] < 0x7f)
        n++;
    return n;
}

/* Writes `text` (n bytes, zero-padded) at sector `s` and reports it the way
 * tests read it: "block write sector=S ok" or "... error=SOLO5_R_...". */
void vblk_write_text(uint64_t s, const char *text, size_t n, char *line,
                     size_t cap)
{
    uint8_t buf[VBLK_SECTOR];
    const char *err;
    memset(buf, 0, sizeof(buf));
    if (n > sizeof(buf))
        n = sizeof(buf);
    memcpy(buf, text, n);
    err = vblk_write(s, buf);
    if (err)
        ksnprintf(line, cap, TK "block write sector=%llu error=%s\n", s, err);
    else
        ksnprintf(line, cap, TK "block write sector=%llu ok\n", s);
}

/* Reads sector `s` and reports its text: "block read sector=S text=\"...\"". */
void vblk_read_text(uint64_t s, char *line, size_t cap)
{
    uint8_t buf[VBLK_SECTOR];
    const char *err = vblk_read(s, buf);
    if (err)
        ksnprintf(line, cap, TK "block read sector=%llu error=%s\n", s, err);
    else
        ksnprintf(line, cap, TK "block read sector=%llu text=%q\n", s,
                  (const char *)buf, vblk_text_len(buf));
}
