% rebase('base.tpl')
<div class="title-row">
  <h1>{{t('users.heading')}}</h1>
</div>
<section class="panel">
  <div class="table-wrap">
  <table class="table" data-testid="user-table">
    <thead><tr><th>{{t('users.col.name')}}</th><th>{{t('users.col.role')}}</th><th>{{t('users.col.state')}}</th><th>{{t('users.col.tokens')}}</th><th>{{t('users.col.actions')}}</th></tr></thead>
    <tbody>
    % for user in users:
      <tr data-testid="user-row" data-user="{{user['name']}}" data-role="{{user['role']}}" data-disabled="{{'1' if user['disabled'] else '0'}}">
        <td class="mono">{{user['name']}}</td>
        <td>
          <form method="post" action="/users/{{user['name']}}" class="inline-form">
            % include('_csrf.tpl')
            <input type="hidden" name="action" value="role">
            <select name="role" aria-label="{{t('users.col.role')}}">
              % for role in roles:
              <option value="{{role}}" {{'selected' if role == user['role'] else ''}}>{{t('role.' + role)}}</option>
              % end
            </select>
            <button type="submit" class="btn" data-testid="user-set-role">{{t('users.set_role')}}</button>
          </form>
        </td>
        <td>{{t('users.disabled') if user['disabled'] else t('users.active')}}</td>
        <td>{{len([x for x in tokens if x['user_name'] == user['name'] and not x['revoked_at']])}}</td>
        <td class="inline-forms">
          <form method="post" action="/users/{{user['name']}}" class="inline-form">
            % include('_csrf.tpl')
            <button type="submit" name="action" value="{{'enable' if user['disabled'] else 'disable'}}" class="btn" data-testid="user-toggle">{{t('users.enable') if user['disabled'] else t('users.disable')}}</button>
            <button type="submit" name="action" value="delete" class="btn btn-danger" data-testid="user-delete">{{t('users.delete')}}</button>
          </form>
        </td>
      </tr>
    % end
    </tbody>
  </table>
  </div>
</section>
<section class="panel">
  <h2>{{t('users.add')}}</h2>
  <form method="post" action="/users" class="filters" data-testid="user-form">
    % include('_csrf.tpl')
    <label class="grow">{{t('users.col.name')}} <input name="name" required pattern="[A-Za-z0-9_.@-]{1,64}" autocomplete="off"></label>
    <label>{{t('users.col.role')}}
      <select name="role">
        % for role in roles:
        <option value="{{role}}">{{t('role.' + role)}}</option>
        % end
      </select>
    </label>
    <label>{{t('users.password')}} <input name="password" type="password" minlength="8" autocomplete="new-password"></label>
    <div class="filter-buttons"><button type="submit" class="btn btn-primary" data-testid="user-add">{{t('users.add')}}</button></div>
  </form>
  <p class="muted small">{{t('users.cli_hint')}}</p>
</section>
