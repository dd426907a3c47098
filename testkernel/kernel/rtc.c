/*
 * rhyzome-testkernel: a wall clock from the CMOS RTC (MC146818), aligned to
 * its second edge, interpolated with the TSC.
 *
 * Solo5 reads the RTC once at boot and adds its monotonic clock, which is
 * good to a second.  Gossip timing needs better: the guest compares its wall
 * clock with a time the injector (another machine's clock, here the host's)
 * put in a packet.  So the RTC's update-ended interrupt (IRQ 8, once per
 * second, as the RTC finishes advancing its seconds) stamps each second edge
 * with the TSC; the time registers are read in the same handler, when they
 * are stable for almost a second.  Between edges the TSC interpolates, at
 * a rate measured from the edges (measure_rate).  One interrupt per second costs nothing next to the
 * 100 Hz wake-up tick.
 *
 * The RTC is the chipset's (port 0x70/0x71, present on every x86 PC QEMU
 * emulates), not a virtio device: Solo5 reads it too, and the kernel's device
 * manifest is unchanged.
 */
#include "kernel.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_REG_B 0x0B
#define RTC_REG_C 0x0C
#define RTC_B_UIE 0x10
#define RTC_B_24H 0x02
#define RTC_B_BINARY 0x04
#define RTC_C_UPDATE_ENDED 0x10

static uint8_t cmos_read(uint8_t reg)
{
    outb(CMOS_INDEX, reg);
    return inb(CMOS_DATA);
}

static void cmos_write(uint8_t reg, uint8_t v)
{
    outb(CMOS_INDEX, reg);
    outb(CMOS_DATA, v);
}

/* Edges seen so far, and the last two, stamped. The handler runs only while
 * the main loop sleeps in idle_wait (interrupts are off everywhere else), so
 * the loop never sees a half-written edge. */
static uint32_t edges;
static uint64_t edge_tsc, edge_epoch_s;

/* For the TSC's rate: the first RATE_PAIRS edges and the latest RATE_PAIRS
 * (a ring), each a TSC stamp and its epoch second, and the rate they give. */
#define RATE_PAIRS 8
static uint64_t first_tsc[RATE_PAIRS], first_s[RATE_PAIRS];
static uint64_t last_tsc[RATE_PAIRS], last_s[RATE_PAIRS];
static uint64_t edge_rate; /* TSC ticks per second; 0 until measured */

/* The median over pairs (i-th first edge, i-th latest edge) of the ticks per
 * second between them. A stamp is late by however long the guest was not
 * scheduled when the RTC fired (tens of ms under load), never early; over a
 * long baseline, and with the median, a few late stamps do not matter. */
static void measure_rate(void)
{
    uint64_t r[RATE_PAIRS], t;
    uint32_t n = edges / 2, k = 0;
    if (n > RATE_PAIRS)
        n = RATE_PAIRS;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = (edges - 1 - i) % RATE_PAIRS; /* i-th latest */
        if (last_s[j] >= first_s[i] + 8)
            r[k++] = udiv64(last_tsc[j] - first_tsc[i], last_s[j] - first_s[i]);
    }
    if (k < 3)
        return;
    for (uint32_t a = 1; a < k; a++) /* insertion sort, k <= 8 */
        for (uint32_t b = a; b > 0 && r[b - 1] > r[b]; b--) {
            t = r[b];
            r[b] = r[b - 1];
            r[b - 1] = t;
        }
    edge_rate = r[k / 2];
}

static uint32_t bcd(uint8_t v, int binary)
{
    return binary ? v : (uint32_t)((v >> 4) * 10 + (v & 15));
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static uint64_t days_from_civil(uint32_t y, uint32_t m, uint32_t d)
{
    uint32_t era, yoe, doy, doe;
    y -= m <= 2;
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (uint64_t)era * 146097 + doe - 719468;
}

static uint64_t rtc_epoch_seconds(void)
{
    uint8_t b = cmos_read(RTC_REG_B);
    int binary = (b & RTC_B_BINARY) != 0;
    uint32_t s = bcd(cmos_read(RTC_SECONDS), binary);
    uint32_t mi = bcd(cmos_read(RTC_MINUTES), binary);
    uint8_t hraw = cmos_read(RTC_HOURS);
    uint32_t h = bcd(hraw & 0x7F, binary);
    uint32_t d = bcd(cmos_read(RTC_DAY), binary);
    uint32_t mo = bcd(cmos_read(RTC_MONTH), binary);
    uint32_t y = 2000 + bcd(cmos_read(RTC_YEAR), binary);
    if (!(b & RTC_B_24H)) {
        /* 12-hour mode: bit 7 is PM, 12 is hour 0 */
        h %= 12;
        if (hraw & 0x80)
            h += 12;
    }
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
}

void rtc_interrupt(void);
void rtc_interrupt(void)
{
    uint64_t now = rdtsc();
    uint8_t c = cmos_read(RTC_REG_C); /* reading C acknowledges the IRQ */
    if (c & RTC_C_UPDATE_ENDED) {
        uint64_t s = rtc_epoch_seconds();
        edge_tsc = now;
        edge_epoch_s = s;
        if (edges < RATE_PAIRS) {
            first_tsc[edges] = now;
            first_s[edges] = s;
        }
        last_tsc[edges % RATE_PAIRS] = now;
        last_s[edges % RATE_PAIRS] = s;
        edges++;
        measure_rate();
    }
    outb(0xA0, 0x20); /* EOI to the slave, then the master */
    outb(0x20, 0x20);
}

void rtc_init(void)
{
    (void)cmos_read(RTC_REG_C); /* clear anything pending */
    cmos_write(RTC_REG_B, (uint8_t)(cmos_read(RTC_REG_B) | RTC_B_UIE));
}

int wall_clock_synced(void)
{
    return edges > 0;
}

/* TSC ticks per second: measured from the RTC's edges once they span enough
 * (measure_rate: at least 3 pairs 8 s apart, so from about 19 s after boot);
 * before, the boot calibration (cpu.c: three 4 ms windows against the PIT,
 * which can be off by a percent when the guest was starved meanwhile). */
int wall_clock_rate_measured(void)
{
    return edge_rate != 0;
}

static uint64_t tsc_rate(void)
{
    return edge_rate ? edge_rate : tsc_per_ms_rate() * 1000;
}

static int64_t tsc_to_ms(int64_t ticks)
{
    uint64_t rate = tsc_rate();
    return ticks >= 0 ? (int64_t)udiv64((uint64_t)ticks * 1000, rate)
                      : -(int64_t)udiv64((uint64_t)-ticks * 1000, rate);
}

/* The RTC's own time, interpolated from the latest edge: ms since the epoch
 * by the RTC, which under QEMU is behind the host's by a fraction of a second
 * (see the README), and behind by its lateness after a late-stamped edge. */
static uint64_t rtc_ms(void)
{
    if (!edges)
        return 0;
    return edge_epoch_s * 1000 + (uint64_t)tsc_to_ms((int64_t)(rdtsc() - edge_tsc));
}

/* The best clock-set sample: the setter's time and the TSC when it came. */
static uint64_t set_epoch_ms, set_tsc;
static int corrected;

void wall_clock_set(uint64_t epoch_ms)
{
    uint64_t now = rdtsc();
    if (!edges)
        return;
    /* A sample arrives d >= 0 ms after it was stamped, so it is behind the
     * setter's clock by d: keep the one that says the latest time once both
     * are carried to now, i.e. the one delayed least. */
    if (!corrected ||
        (int64_t)epoch_ms >
            (int64_t)set_epoch_ms + tsc_to_ms((int64_t)(now - set_tsc))) {
        set_epoch_ms = epoch_ms;
        set_tsc = now;
    }
    corrected = 1;
}

int wall_clock_corrected(void)
{
    return corrected;
}

/* Once set: the best sample carried forward by the TSC (no edge involved, so
 * no edge's lateness); before: the RTC's time. */
uint64_t wall_clock_ms(void)
{
    if (!edges)
        return 0;
    if (corrected)
        return set_epoch_ms + (uint64_t)tsc_to_ms((int64_t)(rdtsc() - set_tsc));
    return rtc_ms();
}
