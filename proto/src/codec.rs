//! The gRPC codec every generated client and server of `flotilla.v1` uses: prost's,
//! with small first buffers. tonic starts each stream's encode and decode buffer at
//! 8 KiB; a coordinator holds one long-lived `AgentLink.Session` stream per agent whose
//! messages are a few hundred bytes, so at fleet scale those two buffers were a third
//! of a session's memory. Here they start at [`BUFFER_SIZE`] and grow (doubling) only
//! for a stream that carries larger messages, such as a big spec or a Raft batch.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The first size of a stream's encode and decode buffers, in bytes.
pub const BUFFER_SIZE: usize = 1024;

/// How many encoded bytes a streaming response gathers before it yields them
/// (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with [`BUFFER_SIZE`] first buffers (see the module).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::{Decoder as _, Encoder as _};

    use super::*;

    /// Both directions start at the small size (the settings' fields are private: their
    /// `Debug` form says them). That larger messages still pass is what every test that
    /// sends a spec or a Raft batch through the generated code shows.
    #[test]
    fn both_directions_start_small() {
        let mut codec = LeanCodec::<crate::v1::AnnotateRequest, crate::v1::AnnotateRequest>::default();
        let want = format!("buffer_size: {BUFFER_SIZE}, yield_threshold: {YIELD_THRESHOLD}");
        assert!(format!("{:?}", codec.encoder().buffer_settings()).contains(&want));
        assert!(format!("{:?}", codec.decoder().buffer_settings()).contains(&want));
    }
}
