% rebase('base.tpl')
<div class="title-row">
  <h1>{{t('account.heading')}}</h1>
</div>
<section class="panel" data-testid="account-me">
  <p>{{t('account.you', name=me.name, role=t('role.' + me.role))}} <span class="muted">({{t('account.kind.' + me.kind)}})</span></p>
  <p class="muted small">{{t('role.' + me.role + '.means')}}</p>
</section>
% if created:
<section class="panel banner-ok" data-testid="token-created">
  <h2>{{t('account.created', name=created['name'])}}</h2>
  <p>{{t('account.created_once')}}</p>
  <pre class="pre mono" data-testid="token-secret">{{created['token']}}</pre>
</section>
% end
% if known:
<section class="panel">
  <h2>{{t('account.tokens')}}</h2>
  % if tokens:
  <div class="table-wrap">
  <table class="table" data-testid="token-table">
    <thead><tr><th>{{t('account.col.name')}}</th><th>{{t('account.col.created')}}</th><th>{{t('account.col.expires')}}</th><th>{{t('account.col.used')}}</th><th>{{t('account.col.state')}}</th><th></th></tr></thead>
    <tbody>
    % for token in tokens:
      <tr data-testid="token-row" data-token-name="{{token['name']}}">
        <td class="mono">{{token['name']}}</td>
        <td>{{h['time'](token['created_at'])}}</td>
        <td>{{h['time'](token['expires_at']) if token['expires_at'] else t('account.never')}}</td>
        <td>{{h['time'](token['last_used_at']) if token['last_used_at'] else '-'}}</td>
        <td>{{t('account.revoked') if token['revoked_at'] else t('account.live')}}</td>
        <td>
          % if not token['revoked_at']:
          <form method="post" action="/account/tokens/{{token['id']}}/revoke">
            % include('_csrf.tpl')
            <button type="submit" class="btn btn-danger" data-testid="token-revoke">{{t('account.revoke')}}</button>
          </form>
          % end
        </td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
  % else:
  <p class="muted">{{t('account.no_tokens')}}</p>
  % end
  <form method="post" action="/account/tokens" class="filters" data-testid="token-form">
    % include('_csrf.tpl')
    <label class="grow">{{t('account.col.name')}} <input name="name" required pattern="[A-Za-z0-9_.@-]{1,64}"></label>
    <label>{{t('account.col.expires')}} <input name="expires" size="8"></label>
    <div class="filter-buttons"><button type="submit" class="btn btn-primary" data-testid="token-create">{{t('account.create')}}</button></div>
  </form>
</section>
% else:
<p class="muted">{{t('account.no_user')}}</p>
% end
