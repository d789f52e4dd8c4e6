//! DNS messages on the wire (RFC 1035, EDNS0 from RFC 6891, Client Subnet from RFC 7871):
//! reading a query without allocating, and writing an answer into a reused buffer.
//!
//! Only what an authoritative server needs is here. The question is kept as the bytes it
//! arrived in, so the answer echoes the asker's letter case (0x20 randomisation) for free, and
//! every record we write is owned by the question name through a compression pointer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The fixed header's size.
pub const HEADER_LEN: usize = 12;
/// The largest message we read: a TCP message's 16-bit length allows no more.
pub const MAX_MESSAGE: usize = 65_535;
/// The UDP payload size a client without EDNS may receive (RFC 1035 §4.2.1).
pub const CLASSIC_UDP_SIZE: usize = 512;
/// The UDP payload size we advertise and never exceed, the DNS Flag Day 2020 value that
/// avoids IP fragmentation on every common path.
pub const MAX_UDP_SIZE: u16 = 1232;
/// How many resource records after the question a query may carry before we stop reading;
/// a real query carries one (its OPT record).
pub const MAX_EXTRA_RECORDS: u16 = 8;

/// Record types we answer or recognise.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS0 pseudo-record.
    pub const OPT: u16 = 41;
    /// Zone transfer; never served.
    pub const AXFR: u16 = 252;
    /// Incremental zone transfer; never served.
    pub const IXFR: u16 = 251;
    /// Any type.
    pub const ANY: u16 = 255;
}

/// Response codes, including the EDNS extended BADVERS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// Success.
    NoError,
    /// The query could not be understood.
    FormErr,
    /// The name does not exist in a zone we are authoritative for.
    NxDomain,
    /// The opcode is not supported.
    NotImp,
    /// We are not authoritative for the name and do not recurse.
    Refused,
    /// The EDNS version is not supported (extended code 16).
    BadVers,
}

impl Rcode {
    /// The full 12-bit code: low 4 bits in the header, high 8 bits in the OPT record.
    const fn code(self) -> u16 {
        match self {
            Self::NoError => 0,
            Self::FormErr => 1,
            Self::NxDomain => 3,
            Self::NotImp => 4,
            Self::Refused => 5,
            Self::BadVers => 16,
        }
    }
}

/// The EDNS Client Subnet option code.
const OPTION_CLIENT_SUBNET: u16 = 8;
/// The only class we serve.
pub const CLASS_IN: u16 = 1;

/// Why a message could not be read as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header: nothing can be answered, not even the id.
    #[error("message shorter than a DNS header")]
    TooShort,
    /// The QR bit says this is a response; answering it could start a loop.
    #[error("message is a response, not a query")]
    NotAQuery,
    /// Readable header, unreadable rest: answer FORMERR.
    #[error("malformed query: {0}")]
    Malformed(&'static str),
    /// An opcode other than QUERY: answer NOTIMP.
    #[error("opcode {0} is not supported")]
    Opcode(u8),
    /// An EDNS version above 0: answer BADVERS.
    #[error("EDNS version {0} is not supported")]
    EdnsVersion(u8),
}

/// An EDNS Client Subnet option as a query carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    /// The client's network, with the bits past `source_prefix` zero.
    pub addr: IpAddr,
    /// How many leading bits of `addr` the resolver disclosed.
    pub source_prefix: u8,
}

/// The EDNS0 part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The largest UDP answer the asker accepts (values under 512 count as 512).
    pub udp_size: u16,
    /// The Client Subnet option, if any.
    pub client_subnet: Option<ClientSubnet>,
}

/// A query, borrowing the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    /// The transaction id.
    pub id: u16,
    /// Recursion desired, echoed back (we never recurse).
    pub recursion_desired: bool,
    /// The question's name, type and class exactly as received.
    pub question: &'a [u8],
    /// Length of the name part of `question`.
    pub name_len: usize,
    /// The asked type.
    pub qtype: u16,
    /// The asked class.
    pub qclass: u16,
    /// EDNS0, when the query has an OPT record.
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The name in wire form (length-prefixed labels, ending with the root's 0).
    pub fn name_wire(&self) -> &[u8] {
        &self.question[..self.name_len]
    }
}

/// Header fields a reply needs even when the rest of the query is unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The transaction id.
    pub id: u16,
    /// Recursion desired.
    pub recursion_desired: bool,
}

/// Reads the header, refusing what must not be answered at all.
pub fn header(msg: &[u8]) -> Result<Header, WireError> {
    if msg.len() < HEADER_LEN {
        return Err(WireError::TooShort);
    }
    if msg[2] & 0x80 != 0 {
        return Err(WireError::NotAQuery);
    }
    Ok(Header {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        recursion_desired: msg[2] & 0x01 != 0,
    })
}

/// Reads a query. Nothing is copied; every length is checked against the message first.
pub fn parse_query(msg: &[u8]) -> Result<Query<'_>, WireError> {
    let header = header(msg)?;
    let opcode = (msg[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Err(WireError::Opcode(opcode));
    }
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    if count(4) != 1 {
        return Err(WireError::Malformed(
            "a query must ask exactly one question",
        ));
    }
    let (ancount, nscount, arcount) = (count(6), count(8), count(10));

    let name_len = name_len_uncompressed(msg, HEADER_LEN)?;
    let fixed = HEADER_LEN + name_len;
    let question = msg
        .get(HEADER_LEN..fixed + 4)
        .ok_or(WireError::Malformed("question truncated"))?;
    let qtype = u16::from_be_bytes([msg[fixed], msg[fixed + 1]]);
    let qclass = u16::from_be_bytes([msg[fixed + 2], msg[fixed + 3]]);

    let records = u32::from(ancount) + u32::from(nscount) + u32::from(arcount);
    if records > u32::from(MAX_EXTRA_RECORDS) {
        return Err(WireError::Malformed("too many records in a query"));
    }
    let mut at = fixed + 4;
    let mut edns = None;
    for index in 0..records {
        let record = read_record(msg, at)?;
        at = record.end;
        let in_additional = index >= u32::from(ancount) + u32::from(nscount);
        if record.rtype != rtype::OPT {
            continue;
        }
        if !in_additional || !record.root_owner || edns.is_some() {
            return Err(WireError::Malformed("misplaced or repeated OPT record"));
        }
        let version = (record.ttl >> 16) as u8;
        if version != 0 {
            return Err(WireError::EdnsVersion(version));
        }
        edns = Some(Edns {
            udp_size: record.class,
            client_subnet: read_options(&msg[record.rdata.0..record.rdata.1])?,
        });
    }
    Ok(Query {
        id: header.id,
        recursion_desired: header.recursion_desired,
        question,
        name_len,
        qtype,
        qclass,
        edns,
    })
}

/// The length of an uncompressed name starting at `at`. A question may not use compression:
/// nothing precedes it to point at.
fn name_len_uncompressed(msg: &[u8], at: usize) -> Result<usize, WireError> {
    let mut pos = at;
    loop {
        let len = *msg.get(pos).ok_or(WireError::Malformed("name truncated"))? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return Err(WireError::Malformed(
                "compressed or invalid label in question",
            ));
        }
        pos += 1 + len;
        if pos - at > 255 {
            return Err(WireError::Malformed("name longer than 255 bytes"));
        }
    }
    if pos > msg.len() {
        return Err(WireError::Malformed("name truncated"));
    }
    Ok(pos - at)
}

/// Skips a possibly compressed name; returns where the record continues and whether the name
/// was the root.
fn skip_name(msg: &[u8], at: usize) -> Result<(usize, bool), WireError> {
    let mut pos = at;
    loop {
        let len = *msg.get(pos).ok_or(WireError::Malformed("name truncated"))?;
        match len {
            0 => return Ok((pos + 1, pos == at)),
            1..=63 => pos += 1 + usize::from(len),
            // A pointer ends the name in this record; where it points does not matter to us.
            0xc0..=0xff => {
                msg.get(pos + 1)
                    .ok_or(WireError::Malformed("name truncated"))?;
                return Ok((pos + 2, false));
            }
            _ => return Err(WireError::Malformed("invalid label type")),
        }
        if pos - at > 255 {
            return Err(WireError::Malformed("name longer than 255 bytes"));
        }
    }
}

struct Record {
    root_owner: bool,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: (usize, usize),
    end: usize,
}

fn read_record(msg: &[u8], at: usize) -> Result<Record, WireError> {
    let (pos, root_owner) = skip_name(msg, at)?;
    let fixed = msg
        .get(pos..pos + 10)
        .ok_or(WireError::Malformed("record truncated"))?;
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = pos + 10;
    let end = start + rdlen;
    if end > msg.len() {
        return Err(WireError::Malformed("record data truncated"));
    }
    Ok(Record {
        root_owner,
        rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        class: u16::from_be_bytes([fixed[2], fixed[3]]),
        ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        rdata: (start, end),
        end,
    })
}

/// Reads EDNS options, keeping the Client Subnet one and checking it as RFC 7871 §7.1.2
/// requires (a bad one is FORMERR).
fn read_options(mut data: &[u8]) -> Result<Option<ClientSubnet>, WireError> {
    let mut subnet = None;
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(WireError::Malformed("EDNS option truncated"));
        }
        let code = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let body = data
            .get(4..4 + len)
            .ok_or(WireError::Malformed("EDNS option truncated"))?;
        if code == OPTION_CLIENT_SUBNET {
            if subnet.is_some() {
                return Err(WireError::Malformed("repeated Client Subnet option"));
            }
            subnet = Some(read_client_subnet(body)?);
        }
        data = &data[4 + len..];
    }
    Ok(subnet)
}

fn read_client_subnet(body: &[u8]) -> Result<ClientSubnet, WireError> {
    let bad = WireError::Malformed("invalid Client Subnet option");
    if body.len() < 4 {
        return Err(bad);
    }
    let family = u16::from_be_bytes([body[0], body[1]]);
    let (source_prefix, scope_prefix) = (body[2], body[3]);
    let addr = &body[4..];
    let width: u8 = match family {
        1 => 32,
        2 => 128,
        _ => return Err(bad),
    };
    // The address carries exactly the bytes the prefix covers, with no bits set past it, and
    // a query's scope is always zero.
    if source_prefix > width
        || scope_prefix != 0
        || addr.len() != usize::from(source_prefix).div_ceil(8)
    {
        return Err(bad);
    }
    if source_prefix % 8 != 0 {
        let last = addr[addr.len() - 1];
        if last & (0xff >> (source_prefix % 8)) != 0 {
            return Err(bad);
        }
    }
    let addr = if family == 1 {
        let mut octets = [0u8; 4];
        octets[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(octets))
    } else {
        let mut octets = [0u8; 16];
        octets[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Ok(ClientSubnet {
        addr,
        source_prefix,
    })
}

/// Writes a name in presentation form, lower-cased, into `out` (cleared first); labels are
/// joined with dots and there is no trailing dot. Returns the number of labels, or `None` when
/// a label holds a byte no hostname can (a dot, a space, a control byte): such a name is in
/// none of our zones.
pub fn name_to_lower(wire: &[u8], out: &mut String) -> Option<usize> {
    out.clear();
    let (mut pos, mut labels) = (0, 0);
    loop {
        let len = usize::from(wire[pos]);
        if len == 0 {
            return Some(labels);
        }
        if labels > 0 {
            out.push('.');
        }
        let label = &wire[pos + 1..pos + 1 + len];
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        {
            return None;
        }
        // All ASCII, checked just above, so this is valid UTF-8 as it stands.
        out.push_str(std::str::from_utf8(label).ok()?);
        let start = out.len() - len;
        out[start..].make_ascii_lowercase();
        labels += 1;
        pos += 1 + len;
    }
}

/// Offset, inside a wire name of `total` labels, of the suffix made of its last `labels`
/// labels; `None` if the name has fewer.
pub fn suffix_offset(wire: &[u8], total: usize, labels: usize) -> Option<usize> {
    let mut pos = 0;
    for _ in 0..total.checked_sub(labels)? {
        pos += 1 + usize::from(wire[pos]);
    }
    Some(pos)
}

/// What follows the question in an answer: the record data we can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData<'a> {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A name server, in presentation form.
    Ns(&'a str),
    /// A canonical name, in presentation form.
    Cname(&'a str),
    /// The zone's start of authority.
    Soa(Soa<'a>),
}

/// SOA record data; the timers are in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa<'a> {
    /// The primary name server.
    pub mname: &'a str,
    /// The zone's contact, as a name.
    pub rname: &'a str,
    /// Zone serial.
    pub serial: u32,
    /// Secondary refresh interval.
    pub refresh: u32,
    /// Secondary retry interval.
    pub retry: u32,
    /// When a secondary gives up.
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    pub minimum: u32,
}

impl RData<'_> {
    fn rtype(&self) -> u16 {
        match self {
            Self::A(_) => rtype::A,
            Self::Aaaa(_) => rtype::AAAA,
            Self::Ns(_) => rtype::NS,
            Self::Cname(_) => rtype::CNAME,
            Self::Soa(_) => rtype::SOA,
        }
    }
}

/// Which section a record goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The answer section.
    Answer,
    /// The authority section.
    Authority,
}

/// Writes one reply into a buffer that is reused across queries.
#[derive(Debug)]
pub struct ReplyWriter<'b> {
    buf: &'b mut Vec<u8>,
    counts: [u16; 3],
    section: usize,
}

impl<'b> ReplyWriter<'b> {
    /// Starts a reply echoing `header` and, when given, the question.
    pub fn new(
        buf: &'b mut Vec<u8>,
        header: Header,
        authoritative: bool,
        question: Option<&[u8]>,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&header.id.to_be_bytes());
        let mut flags = 0x8000u16;
        if authoritative {
            flags |= 0x0400;
        }
        if header.recursion_desired {
            flags |= 0x0100;
        }
        buf.extend_from_slice(&flags.to_be_bytes());
        let qdcount = u16::from(question.is_some());
        buf.extend_from_slice(&qdcount.to_be_bytes());
        buf.extend_from_slice(&[0; 6]);
        if let Some(question) = question {
            buf.extend_from_slice(question);
        }
        Self {
            buf,
            counts: [0; 3],
            section: 0,
        }
    }

    /// Sets the response code's header bits (the extended bits go in [`Self::finish`]).
    pub fn set_rcode(&mut self, rcode: Rcode) {
        self.buf[3] = (self.buf[3] & 0xf0) | (rcode.code() & 0x0f) as u8;
    }

    /// Appends a record whose owner is the name at `owner` (an offset into the message, for a
    /// compression pointer).
    pub fn record(&mut self, section: Section, owner: usize, ttl: u32, data: &RData<'_>) {
        let index = section as usize;
        debug_assert!(index >= self.section, "sections are written in order");
        self.section = index;
        self.counts[index] += 1;
        let pointer = 0xc000 | owner as u16;
        self.buf.extend_from_slice(&pointer.to_be_bytes());
        self.buf.extend_from_slice(&data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match data {
            RData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Aaaa(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Ns(name) | RData::Cname(name) => write_name(self.buf, name),
            RData::Soa(soa) => {
                write_name(self.buf, soa.mname);
                write_name(self.buf, soa.rname);
                for value in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                    self.buf.extend_from_slice(&value.to_be_bytes());
                }
            }
        }
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// Finishes the reply: writes the counts, the OPT record when the query had EDNS, and
    /// truncates to `limit` bytes (setting TC) if the records do not fit.
    pub fn finish(self, rcode: Rcode, opt: Option<ReplyOpt>, limit: usize) {
        let question_end = self.question_end();
        let Self { buf, counts, .. } = self;
        let opt_len = opt.map_or(0, |o| o.encoded_len());
        if buf.len() + opt_len > limit {
            // RFC 2181 §9: a truncated answer is better empty than partial.
            buf.truncate(question_end);
            buf[2] |= 0x02;
            buf[6..12].fill(0);
        } else {
            buf[6..8].copy_from_slice(&counts[0].to_be_bytes());
            buf[8..10].copy_from_slice(&counts[1].to_be_bytes());
        }
        buf[3] = (buf[3] & 0xf0) | (rcode.code() & 0x0f) as u8;
        if let Some(opt) = opt {
            opt.write(buf, rcode);
            buf[10..12].copy_from_slice(&1u16.to_be_bytes());
        }
    }

    fn question_end(&self) -> usize {
        let qdcount = u16::from_be_bytes([self.buf[4], self.buf[5]]);
        if qdcount == 0 {
            return HEADER_LEN;
        }
        // Our own question copy is uncompressed and well formed.
        let mut pos = HEADER_LEN;
        while self.buf[pos] != 0 {
            pos += 1 + usize::from(self.buf[pos]);
        }
        pos + 5
    }
}

/// The OPT record of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyOpt {
    /// The Client Subnet option to echo, with the scope the answer is valid for.
    pub client_subnet: Option<(ClientSubnet, u8)>,
}

impl ReplyOpt {
    fn subnet_bytes(subnet: &ClientSubnet) -> usize {
        usize::from(subnet.source_prefix).div_ceil(8)
    }

    fn encoded_len(self) -> usize {
        11 + self
            .client_subnet
            .map_or(0, |(s, _)| 8 + Self::subnet_bytes(&s))
    }

    fn write(self, buf: &mut Vec<u8>, rcode: Rcode) {
        buf.push(0);
        buf.extend_from_slice(&rtype::OPT.to_be_bytes());
        buf.extend_from_slice(&MAX_UDP_SIZE.to_be_bytes());
        let extended = (rcode.code() >> 4) as u8;
        buf.extend_from_slice(&[extended, 0, 0, 0]);
        match self.client_subnet {
            None => buf.extend_from_slice(&[0, 0]),
            Some((subnet, scope)) => {
                let bytes = Self::subnet_bytes(&subnet);
                buf.extend_from_slice(&((8 + bytes) as u16).to_be_bytes());
                buf.extend_from_slice(&OPTION_CLIENT_SUBNET.to_be_bytes());
                buf.extend_from_slice(&((4 + bytes) as u16).to_be_bytes());
                let family: u16 = if subnet.addr.is_ipv4() { 1 } else { 2 };
                buf.extend_from_slice(&family.to_be_bytes());
                buf.extend_from_slice(&[subnet.source_prefix, scope]);
                match subnet.addr {
                    IpAddr::V4(ip) => buf.extend_from_slice(&ip.octets()[..bytes]),
                    IpAddr::V6(ip) => buf.extend_from_slice(&ip.octets()[..bytes]),
                }
            }
        }
    }
}

/// Writes a presentation-form name (no trailing dot) uncompressed.
fn write_name(buf: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        buf.push(label.len() as u8);
        buf.extend_from_slice(label.as_bytes());
    }
    buf.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query as `dig` would send it, built by hand.
    fn query(name: &str, qtype: u16, edns: Option<&[u8]>) -> Vec<u8> {
        let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        write_name(&mut msg, name);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(options) = edns {
            msg[11] = 1;
            msg.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
            msg.extend_from_slice(&(options.len() as u16).to_be_bytes());
            msg.extend_from_slice(options);
        }
        msg
    }

    #[test]
    fn reads_a_plain_query_and_keeps_case() {
        let msg = query("WwW.Example.COM", rtype::A, None);
        let q = parse_query(&msg).unwrap();
        assert_eq!((q.id, q.qtype, q.qclass), (0x1234, rtype::A, CLASS_IN));
        assert!(q.recursion_desired && q.edns.is_none());
        let mut name = String::new();
        assert_eq!(name_to_lower(q.name_wire(), &mut name), Some(3));
        assert_eq!(name, "www.example.com");
        assert_eq!(&q.name_wire()[1..4], b"WwW");
    }

    #[test]
    fn reads_client_subnet() {
        // 203.0.113.0/24, as `dig +subnet=203.0.113.0/24` sends it.
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 203, 0, 113];
        let msg = query("a.example.com", rtype::AAAA, Some(&ecs));
        let edns = parse_query(&msg).unwrap().edns.unwrap();
        assert_eq!(edns.udp_size, 0x1000);
        let subnet = edns.client_subnet.unwrap();
        assert_eq!(subnet.addr, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)));
        assert_eq!(subnet.source_prefix, 24);
    }

    #[test]
    fn refuses_bad_client_subnets() {
        for ecs in [
            &[0, 8, 0, 7, 0, 1, 33, 0, 1, 2, 3][..], // prefix too long
            &[0, 8, 0, 7, 0, 1, 24, 5, 1, 2, 3],     // scope set in a query
            &[0, 8, 0, 6, 0, 1, 24, 0, 1, 2],        // too few address bytes
            &[0, 8, 0, 7, 0, 1, 20, 0, 1, 2, 0x1f],  // bits past the prefix
            &[0, 8, 0, 7, 0, 3, 24, 0, 1, 2, 3],     // unknown family
        ] {
            let msg = query("a.example.com", rtype::A, Some(ecs));
            assert!(matches!(parse_query(&msg), Err(WireError::Malformed(_))));
        }
    }

    #[test]
    fn refuses_what_is_not_a_query() {
        assert_eq!(parse_query(&[0; 5]), Err(WireError::TooShort));
        let mut msg = query("a.example.com", rtype::A, None);
        msg[2] |= 0x80;
        assert_eq!(parse_query(&msg), Err(WireError::NotAQuery));
        msg[2] = 0x28; // opcode 5, UPDATE
        assert_eq!(parse_query(&msg), Err(WireError::Opcode(5)));
        let mut msg = query("a.example.com", rtype::A, None);
        msg[12] = 0xc0; // a pointer in the question
        assert!(parse_query(&msg).is_err());
        let msg = query("a.example.com", rtype::A, None);
        assert!(parse_query(&msg[..msg.len() - 1]).is_err());
    }

    #[test]
    fn writes_records_and_truncates_whole() {
        let msg = query("App.Example.com", rtype::A, Some(&[]));
        let q = parse_query(&msg).unwrap();
        let mut buf = Vec::new();
        let header = header(&msg).unwrap();
        let mut w = ReplyWriter::new(&mut buf, header, true, Some(q.question));
        for i in 0..3 {
            w.record(
                Section::Answer,
                HEADER_LEN,
                30,
                &RData::A(Ipv4Addr::new(10, 0, 0, i)),
            );
        }
        w.finish(
            Rcode::NoError,
            Some(ReplyOpt {
                client_subnet: None,
            }),
            512,
        );
        assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 3);
        assert_eq!(buf[2] & 0x02, 0);
        let full = buf.len();

        let mut w = ReplyWriter::new(&mut buf, header, true, Some(q.question));
        for i in 0..3 {
            w.record(
                Section::Answer,
                HEADER_LEN,
                30,
                &RData::A(Ipv4Addr::new(10, 0, 0, i)),
            );
        }
        w.finish(
            Rcode::NoError,
            Some(ReplyOpt {
                client_subnet: None,
            }),
            full - 1,
        );
        assert_eq!(buf[2] & 0x02, 0x02, "TC set");
        assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 0);
        assert_eq!(u16::from_be_bytes([buf[10], buf[11]]), 1, "OPT kept");
    }

    #[test]
    fn suffix_offsets() {
        let mut wire = Vec::new();
        write_name(&mut wire, "a.b.example.com");
        assert_eq!(suffix_offset(&wire, 4, 2), Some(4));
        assert_eq!(suffix_offset(&wire, 4, 4), Some(0));
        assert_eq!(suffix_offset(&wire, 4, 0), Some(wire.len() - 1));
        assert_eq!(suffix_offset(&wire, 4, 5), None);
    }
}
