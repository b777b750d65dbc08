//! Request completion on arbitrary bytes, mostly HTTP: no panics, a definite answer at
//! the size limit, and a complete head that parses the same from its own bytes.
#![no_main]

use baton_proto::request::{ClientRequest, RequestLimits, parse_http_head, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = RequestLimits {
        max_head_len: 2048,
        max_headers: 32,
    };
    let result = parse_request(data, &limits);
    if data.len() >= limits.max_head_len {
        assert_ne!(result, Ok(None), "never 'need more' at the limit");
    }
    if let Ok(Some(request)) = &result {
        assert!(request.head_len() <= data.len().min(limits.max_head_len));
        let _ = request.host();
        if let ClientRequest::Http(head) = request {
            let _ = (head.path(), head.query(), head.file_extension());
            let _ = head.cookies().count();
            let _ = head.cookie("session");
            let _ = head.header("host");
        }
        // The head alone, without what followed it, is the same head.
        assert_eq!(
            &parse_request(&data[..request.head_len()], &limits),
            &result,
            "head parsed differently without its trailing bytes"
        );
    }
    // The HTTP parser directly, whatever the first byte.
    if let Ok(Some(head)) = parse_http_head(data, &limits) {
        assert!(head.head_len <= data.len());
        assert!(head.headers.len() <= limits.max_headers);
    }
});
