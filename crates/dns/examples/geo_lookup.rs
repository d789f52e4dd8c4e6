//! Prints where a GeoIP database places each address given: `geo_lookup DB ADDR...`.

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: geo_lookup DB ADDR...");
    let db = meridian_dns::GeoDb::open(path.as_ref()).expect("opening the database");
    println!("{}", db.description());
    for addr in args {
        let located = db.locate(addr.parse().expect("an IP address"));
        println!("{addr}\t/{}\t{:?}", located.prefix, located.point);
    }
}
