//! ISO 3166-1 alpha-2 codes, English short names (as MaxMind writes them) and continents.

/// (code, English short name, continent code)
pub const COUNTRIES: &[(&str, &str, &str)] = &[
    ("AD", "Andorra", "EU"),
    ("AE", "United Arab Emirates", "AS"),
    ("AF", "Afghanistan", "AS"),
    ("AG", "Antigua and Barbuda", "NA"),
    ("AI", "Anguilla", "NA"),
    ("AL", "Albania", "EU"),
    ("AM", "Armenia", "AS"),
    ("AO", "Angola", "AF"),
    ("AQ", "Antarctica", "AN"),
    ("AR", "Argentina", "SA"),
    ("AS", "American Samoa", "OC"),
    ("AT", "Austria", "EU"),
    ("AU", "Australia", "OC"),
    ("AW", "Aruba", "NA"),
    ("AX", "Åland", "EU"),
    ("AZ", "Azerbaijan", "AS"),
    ("BA", "Bosnia and Herzegovina", "EU"),
    ("BB", "Barbados", "NA"),
    ("BD", "Bangladesh", "AS"),
    ("BE", "Belgium", "EU"),
    ("BF", "Burkina Faso", "AF"),
    ("BG", "Bulgaria", "EU"),
    ("BH", "Bahrain", "AS"),
    ("BI", "Burundi", "AF"),
    ("BJ", "Benin", "AF"),
    ("BL", "Saint Barthélemy", "NA"),
    ("BM", "Bermuda", "NA"),
    ("BN", "Brunei", "AS"),
    ("BO", "Bolivia", "SA"),
    ("BQ", "Bonaire, Sint Eustatius, and Saba", "NA"),
    ("BR", "Brazil", "SA"),
    ("BS", "Bahamas", "NA"),
    ("BT", "Bhutan", "AS"),
    ("BV", "Bouvet Island", "AN"),
    ("BW", "Botswana", "AF"),
    ("BY", "Belarus", "EU"),
    ("BZ", "Belize", "NA"),
    ("CA", "Canada", "NA"),
    ("CC", "Cocos (Keeling) Islands", "AS"),
    ("CD", "DR Congo", "AF"),
    ("CF", "Central African Republic", "AF"),
    ("CG", "Congo Republic", "AF"),
    ("CH", "Switzerland", "EU"),
    ("CI", "Ivory Coast", "AF"),
    ("CK", "Cook Islands", "OC"),
    ("CL", "Chile", "SA"),
    ("CM", "Cameroon", "AF"),
    ("CN", "China", "AS"),
    ("CO", "Colombia", "SA"),
    ("CR", "Costa Rica", "NA"),
    ("CU", "Cuba", "NA"),
    ("CV", "Cabo Verde", "AF"),
    ("CW", "Curaçao", "NA"),
    ("CX", "Christmas Island", "OC"),
    ("CY", "Cyprus", "EU"),
    ("CZ", "Czechia", "EU"),
    ("DE", "Germany", "EU"),
    ("DJ", "Djibouti", "AF"),
    ("DK", "Denmark", "EU"),
    ("DM", "Dominica", "NA"),
    ("DO", "Dominican Republic", "NA"),
    ("DZ", "Algeria", "AF"),
    ("EC", "Ecuador", "SA"),
    ("EE", "Estonia", "EU"),
    ("EG", "Egypt", "AF"),
    ("EH", "Western Sahara", "AF"),
    ("ER", "Eritrea", "AF"),
    ("ES", "Spain", "EU"),
    ("ET", "Ethiopia", "AF"),
    ("FI", "Finland", "EU"),
    ("FJ", "Fiji", "OC"),
    ("FK", "Falkland Islands", "SA"),
    ("FM", "Federated States of Micronesia", "OC"),
    ("FO", "Faroe Islands", "EU"),
    ("FR", "France", "EU"),
    ("GA", "Gabon", "AF"),
    ("GB", "United Kingdom", "EU"),
    ("GD", "Grenada", "NA"),
    ("GE", "Georgia", "AS"),
    ("GF", "French Guiana", "SA"),
    ("GG", "Guernsey", "EU"),
    ("GH", "Ghana", "AF"),
    ("GI", "Gibraltar", "EU"),
    ("GL", "Greenland", "NA"),
    ("GM", "Gambia", "AF"),
    ("GN", "Guinea", "AF"),
    ("GP", "Guadeloupe", "NA"),
    ("GQ", "Equatorial Guinea", "AF"),
    ("GR", "Greece", "EU"),
    ("GS", "South Georgia and the South Sandwich Islands", "AN"),
    ("GT", "Guatemala", "NA"),
    ("GU", "Guam", "OC"),
    ("GW", "Guinea-Bissau", "AF"),
    ("GY", "Guyana", "SA"),
    ("HK", "Hong Kong", "AS"),
    ("HM", "Heard Island and McDonald Islands", "AN"),
    ("HN", "Honduras", "NA"),
    ("HR", "Croatia", "EU"),
    ("HT", "Haiti", "NA"),
    ("HU", "Hungary", "EU"),
    ("ID", "Indonesia", "AS"),
    ("IE", "Ireland", "EU"),
    ("IL", "Israel", "AS"),
    ("IM", "Isle of Man", "EU"),
    ("IN", "India", "AS"),
    ("IO", "British Indian Ocean Territory", "AS"),
    ("IQ", "Iraq", "AS"),
    ("IR", "Iran", "AS"),
    ("IS", "Iceland", "EU"),
    ("IT", "Italy", "EU"),
    ("JE", "Jersey", "EU"),
    ("JM", "Jamaica", "NA"),
    ("JO", "Jordan", "AS"),
    ("JP", "Japan", "AS"),
    ("KE", "Kenya", "AF"),
    ("KG", "Kyrgyzstan", "AS"),
    ("KH", "Cambodia", "AS"),
    ("KI", "Kiribati", "OC"),
    ("KM", "Comoros", "AF"),
    ("KN", "St Kitts and Nevis", "NA"),
    ("KP", "North Korea", "AS"),
    ("KR", "South Korea", "AS"),
    ("KW", "Kuwait", "AS"),
    ("KY", "Cayman Islands", "NA"),
    ("KZ", "Kazakhstan", "AS"),
    ("LA", "Laos", "AS"),
    ("LB", "Lebanon", "AS"),
    ("LC", "Saint Lucia", "NA"),
    ("LI", "Liechtenstein", "EU"),
    ("LK", "Sri Lanka", "AS"),
    ("LR", "Liberia", "AF"),
    ("LS", "Lesotho", "AF"),
    ("LT", "Lithuania", "EU"),
    ("LU", "Luxembourg", "EU"),
    ("LV", "Latvia", "EU"),
    ("LY", "Libya", "AF"),
    ("MA", "Morocco", "AF"),
    ("MC", "Monaco", "EU"),
    ("MD", "Moldova", "EU"),
    ("ME", "Montenegro", "EU"),
    ("MF", "Saint Martin", "NA"),
    ("MG", "Madagascar", "AF"),
    ("MH", "Marshall Islands", "OC"),
    ("MK", "North Macedonia", "EU"),
    ("ML", "Mali", "AF"),
    ("MM", "Myanmar", "AS"),
    ("MN", "Mongolia", "AS"),
    ("MO", "Macao", "AS"),
    ("MP", "Northern Mariana Islands", "OC"),
    ("MQ", "Martinique", "NA"),
    ("MR", "Mauritania", "AF"),
    ("MS", "Montserrat", "NA"),
    ("MT", "Malta", "EU"),
    ("MU", "Mauritius", "AF"),
    ("MV", "Maldives", "AS"),
    ("MW", "Malawi", "AF"),
    ("MX", "Mexico", "NA"),
    ("MY", "Malaysia", "AS"),
    ("MZ", "Mozambique", "AF"),
    ("NA", "Namibia", "AF"),
    ("NC", "New Caledonia", "OC"),
    ("NE", "Niger", "AF"),
    ("NF", "Norfolk Island", "OC"),
    ("NG", "Nigeria", "AF"),
    ("NI", "Nicaragua", "NA"),
    ("NL", "Netherlands", "EU"),
    ("NO", "Norway", "EU"),
    ("NP", "Nepal", "AS"),
    ("NR", "Nauru", "OC"),
    ("NU", "Niue", "OC"),
    ("NZ", "New Zealand", "OC"),
    ("OM", "Oman", "AS"),
    ("PA", "Panama", "NA"),
    ("PE", "Peru", "SA"),
    ("PF", "French Polynesia", "OC"),
    ("PG", "Papua New Guinea", "OC"),
    ("PH", "Philippines", "AS"),
    ("PK", "Pakistan", "AS"),
    ("PL", "Poland", "EU"),
    ("PM", "Saint Pierre and Miquelon", "NA"),
    ("PN", "Pitcairn Islands", "OC"),
    ("PR", "Puerto Rico", "NA"),
    ("PS", "Palestine", "AS"),
    ("PT", "Portugal", "EU"),
    ("PW", "Palau", "OC"),
    ("PY", "Paraguay", "SA"),
    ("QA", "Qatar", "AS"),
    ("RE", "Réunion", "AF"),
    ("RO", "Romania", "EU"),
    ("RS", "Serbia", "EU"),
    ("RU", "Russia", "EU"),
    ("RW", "Rwanda", "AF"),
    ("SA", "Saudi Arabia", "AS"),
    ("SB", "Solomon Islands", "OC"),
    ("SC", "Seychelles", "AF"),
    ("SD", "Sudan", "AF"),
    ("SE", "Sweden", "EU"),
    ("SG", "Singapore", "AS"),
    ("SH", "Saint Helena", "AF"),
    ("SI", "Slovenia", "EU"),
    ("SJ", "Svalbard and Jan Mayen", "EU"),
    ("SK", "Slovakia", "EU"),
    ("SL", "Sierra Leone", "AF"),
    ("SM", "San Marino", "EU"),
    ("SN", "Senegal", "AF"),
    ("SO", "Somalia", "AF"),
    ("SR", "Suriname", "SA"),
    ("SS", "South Sudan", "AF"),
    ("ST", "São Tomé and Príncipe", "AF"),
    ("SV", "El Salvador", "NA"),
    ("SX", "Sint Maarten", "NA"),
    ("SY", "Syria", "AS"),
    ("SZ", "Eswatini", "AF"),
    ("TC", "Turks and Caicos Islands", "NA"),
    ("TD", "Chad", "AF"),
    ("TF", "French Southern Territories", "AN"),
    ("TG", "Togo", "AF"),
    ("TH", "Thailand", "AS"),
    ("TJ", "Tajikistan", "AS"),
    ("TK", "Tokelau", "OC"),
    ("TL", "Timor-Leste", "OC"),
    ("TM", "Turkmenistan", "AS"),
    ("TN", "Tunisia", "AF"),
    ("TO", "Tonga", "OC"),
    ("TR", "Türkiye", "AS"),
    ("TT", "Trinidad and Tobago", "NA"),
    ("TV", "Tuvalu", "OC"),
    ("TW", "Taiwan", "AS"),
    ("TZ", "Tanzania", "AF"),
    ("UA", "Ukraine", "EU"),
    ("UG", "Uganda", "AF"),
    ("UM", "U.S. Outlying Islands", "OC"),
    ("US", "United States", "NA"),
    ("UY", "Uruguay", "SA"),
    ("UZ", "Uzbekistan", "AS"),
    ("VA", "Vatican City", "EU"),
    ("VC", "St Vincent and Grenadines", "NA"),
    ("VE", "Venezuela", "SA"),
    ("VG", "British Virgin Islands", "NA"),
    ("VI", "U.S. Virgin Islands", "NA"),
    ("VN", "Vietnam", "AS"),
    ("VU", "Vanuatu", "OC"),
    ("WF", "Wallis and Futuna", "OC"),
    ("WS", "Samoa", "OC"),
    ("XK", "Kosovo", "EU"),
    ("YE", "Yemen", "AS"),
    ("YT", "Mayotte", "AF"),
    ("ZA", "South Africa", "AF"),
    ("ZM", "Zambia", "AF"),
    ("ZW", "Zimbabwe", "AF"),
    // Registry placeholders some databases use.
    ("EU", "Europe", "EU"),
    ("AP", "Asia/Pacific Region", "AS"),
];

/// (code, name)
pub const CONTINENTS: &[(&str, &str)] = &[
    ("AF", "Africa"),
    ("AN", "Antarctica"),
    ("AS", "Asia"),
    ("EU", "Europe"),
    ("NA", "North America"),
    ("OC", "Oceania"),
    ("SA", "South America"),
];

/// A country as a compact code: the two ASCII letters, 0 for unknown.
pub type CountryCode = u16;

pub fn pack(code: &str) -> CountryCode {
    let b = code.as_bytes();
    if b.len() == 2 && b[0].is_ascii_alphabetic() && b[1].is_ascii_alphabetic() {
        (u16::from(b[0].to_ascii_uppercase()) << 8) | u16::from(b[1].to_ascii_uppercase())
    } else {
        0
    }
}

pub fn unpack(c: CountryCode) -> Option<String> {
    if c == 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&[(c >> 8) as u8, c as u8]).into_owned())
}

fn entry(c: CountryCode) -> Option<&'static (&'static str, &'static str, &'static str)> {
    let code = unpack(c)?;
    COUNTRIES.iter().find(|(k, _, _)| *k == code)
}

/// English short name of a country code ("GB" -> "United Kingdom").
pub fn name(c: CountryCode) -> Option<&'static str> {
    entry(c).map(|e| e.1)
}

/// Continent code of a country ("GB" -> "EU").
pub fn continent_code(c: CountryCode) -> Option<&'static str> {
    entry(c).map(|e| e.2)
}

pub fn continent_name(code: &str) -> Option<&'static str> {
    CONTINENTS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(code))
        .map(|e| e.1)
}

/// Parses what an operator types: an ISO code ("GB", "gb") or an English name
/// ("United Kingdom", case-insensitive; a few common alternatives too).
pub fn lookup(text: &str) -> Option<CountryCode> {
    let t = text.trim();
    if t.len() == 2
        && let Some(e) = COUNTRIES.iter().find(|(k, _, _)| k.eq_ignore_ascii_case(t))
    {
        return Some(pack(e.0));
    }
    if let Some(e) = COUNTRIES.iter().find(|(_, n, _)| n.eq_ignore_ascii_case(t)) {
        return Some(pack(e.0));
    }
    let alias = match t.to_ascii_lowercase().as_str() {
        "uk" | "great britain" | "britain" | "england" => "GB",
        "usa" | "united states of america" | "america" => "US",
        "russian federation" => "RU",
        "korea" | "republic of korea" => "KR",
        "czech republic" => "CZ",
        "turkey" => "TR",
        "the netherlands" | "holland" => "NL",
        "viet nam" => "VN",
        "uae" => "AE",
        _ => return None,
    };
    Some(pack(alias))
}

/// Continent from a code or a name.
pub fn lookup_continent(text: &str) -> Option<&'static str> {
    let t = text.trim();
    CONTINENTS
        .iter()
        .find(|(k, n)| k.eq_ignore_ascii_case(t) || n.eq_ignore_ascii_case(t))
        .map(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lookups() {
        assert_eq!(name(pack("GB")), Some("United Kingdom"));
        assert_eq!(name(pack("us")), Some("United States"));
        assert_eq!(name(pack("JP")), Some("Japan"));
        assert_eq!(continent_code(pack("GB")), Some("EU"));
        assert_eq!(lookup("united kingdom"), Some(pack("GB")));
        assert_eq!(lookup("gb"), Some(pack("GB")));
        assert_eq!(lookup("UK"), Some(pack("GB")));
        assert_eq!(lookup("Atlantis"), None);
        assert_eq!(lookup_continent("Europe"), Some("EU"));
        assert_eq!(unpack(0), None);
        // every code is unique and two letters
        let mut codes: Vec<&str> = COUNTRIES.iter().map(|c| c.0).collect();
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n);
        assert!(
            COUNTRIES
                .iter()
                .all(|c| pack(c.0) != 0 && continent_name(c.2).is_some())
        );
    }
}
