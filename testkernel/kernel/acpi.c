/*
 * rhyzome-testkernel: power off like Solo5's virtio platform.
 *
 * 1. ACPI S5: RSDP (EBDA, then 0xe0000-0xfffff) -> RSDT/XSDT -> FADT
 *    (PM1a/PM1b_CNT_BLK, DSDT) -> \_S5_ package in the DSDT AML for
 *    SLP_TYPa/b; write SLP_TYP | SLP_EN.  If any step fails, use QEMU's
 *    PIIX4/ICH9 values (PM1a_CNT at 0x604, SLP_TYP 0).
 * 2. isa-debug-exit (port 0xf4), if such a device exists.
 * 3. cli; hlt forever.
 */
#include "kernel.h"

#define SLP_EN (1u << 13)

static int checksum_ok(const uint8_t *p, uint32_t len)
{
    uint8_t sum = 0;
    for (uint32_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + p[i]);
    return sum == 0;
}

static const uint8_t *rsdp_scan(uint32_t start, uint32_t len)
{
    for (uint32_t a = start; a + 20 <= start + len; a += 16) {
        const uint8_t *p = (const uint8_t *)(uintptr_t)a;
        if (memcmp(p, "RSD PTR ", 8) == 0 && checksum_ok(p, 20))
            return p;
    }
    return NULL;
}

static const uint8_t *find_rsdp(void)
{
    uint32_t ebda = (uint32_t)(*(volatile uint16_t *)0x40E) << 4;
    const uint8_t *p = NULL;
    if (ebda >= 0x80000 && ebda < 0xA0000)
        p = rsdp_scan(ebda, 1024);
    if (!p)
        p = rsdp_scan(0xE0000, 0x20000);
    return p;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

/* A plausible, checksummed ACPI table below 4 GiB with signature sig. */
static const uint8_t *table_at(uint32_t addr, const char *sig)
{
    const uint8_t *t = (const uint8_t *)(uintptr_t)addr;
    uint32_t len;
    if (addr < 0x1000)
        return NULL;
    if (sig && memcmp(t, sig, 4) != 0)
        return NULL;
    len = rd32(t + 4);
    if (len < 36 || len > (16u << 20) || !checksum_ok(t, len))
        return NULL;
    return t;
}

static const uint8_t *find_fadt(const uint8_t *rsdp)
{
    const uint8_t *root = NULL;
    uint32_t entry_size = 4;
    if (rsdp[15] >= 2) {
        /* XSDT: 64-bit pointers; only usable if below 4 GiB */
        uint32_t lo = rd32(rsdp + 24), hi = rd32(rsdp + 28);
        if (hi == 0 && (root = table_at(lo, "XSDT")) != NULL)
            entry_size = 8;
    }
    if (!root)
        root = table_at(rd32(rsdp + 16), "RSDT");
    if (!root)
        return NULL;
    for (uint32_t off = 36; off + entry_size <= rd32(root + 4);
         off += entry_size) {
        const uint8_t *t;
        if (entry_size == 8 && rd32(root + off + 4) != 0)
            continue;
        t = table_at(rd32(root + off), "FACP");
        if (t)
            return t;
    }
    return NULL;
}

/* Parse one AML integer data object (ZeroOp, OneOp, BytePrefix, ...). */
static int aml_int(const uint8_t *p, const uint8_t *end, uint32_t *v)
{
    if (p >= end)
        return -1;
    switch (p[0]) {
    case 0x00: *v = 0; return 1;                 /* ZeroOp */
    case 0x01: *v = 1; return 1;                 /* OneOp */
    case 0x0A:                                   /* BytePrefix */
        if (p + 1 >= end)
            return -1;
        *v = p[1];
        return 2;
    case 0x0B:                                   /* WordPrefix */
        if (p + 2 >= end)
            return -1;
        *v = (uint32_t)p[1] | ((uint32_t)p[2] << 8);
        return 3;
    default:
        return -1;
    }
}

/* Find Name(\_S5_, Package() { SLP_TYPa, SLP_TYPb, ... }) in the DSDT. */
static int s5_from_dsdt(const uint8_t *dsdt, uint32_t *typa, uint32_t *typb)
{
    uint32_t len = rd32(dsdt + 4);
    const uint8_t *end = dsdt + len;
    for (const uint8_t *p = dsdt + 36; p + 4 < end; p++) {
        const uint8_t *q;
        int n;
        if (memcmp(p, "_S5_", 4) != 0)
            continue;
        /* preceded by NameOp, optionally with a root prefix '\' */
        if (!(p[-1] == 0x08 || (p[-1] == '\\' && p[-2] == 0x08)))
            continue;
        q = p + 4;
        if (q >= end || *q != 0x12) /* PackageOp */
            continue;
        q++;
        q += 1 + (*q >> 6); /* PkgLength: lead byte + 0..3 more */
        q++;                /* NumElements */
        n = aml_int(q, end, typa);
        if (n < 0)
            continue;
        q += n;
        if (aml_int(q, end, typb) < 0)
            *typb = *typa;
        return 0;
    }
    return -1;
}

void platform_poweroff(int code)
{
    uint32_t pm1a = 0x604, pm1b = 0, typa = 0, typb = 0;
    const uint8_t *rsdp, *fadt = NULL, *dsdt = NULL;

    __asm__ volatile("cli");
    rsdp = find_rsdp();
    if (rsdp)
        fadt = find_fadt(rsdp);
    if (fadt && rd32(fadt + 4) >= 72) {
        if (rd32(fadt + 64))
            pm1a = rd32(fadt + 64);
        pm1b = rd32(fadt + 68);
        dsdt = table_at(rd32(fadt + 40), "DSDT");
    }
    if (!dsdt || s5_from_dsdt(dsdt, &typa, &typb) < 0) {
        typa = 0; /* QEMU PIIX4 / ICH9: S5 is SLP_TYP 0 */
        typb = 0;
    }
    outw((uint16_t)pm1a, (uint16_t)(((typa & 7) << 10) | SLP_EN));
    if (pm1b)
        outw((uint16_t)pm1b, (uint16_t)(((typb & 7) << 10) | SLP_EN));

    /* QEMU handles the shutdown request asynchronously; give it time
     * before trying anything else. */
    delay_ms(200);
    outb(0xF4, (uint8_t)code); /* isa-debug-exit: qemu exits (code<<1)|1 */
    delay_ms(50);
    for (;;)
        __asm__ volatile("cli; hlt");
}
